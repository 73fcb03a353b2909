package tokens

import (
	"strings"
	"testing"
)

// TestNormalizeEmailFoldsASCIIOnly: letters outside ASCII keep their case, so addresses that Unicode folding would merge
// (the Kelvin sign and "k", U+0130 and "i") stay distinct owners.
func TestNormalizeEmailFoldsASCIIOnly(t *testing.T) {
	for in, want := range map[string]string{
		"Alice@Example.COM":       "alice@example.com",
		"  bob@example.com\t\n":   "bob@example.com",
		"\u212Aelvin@example.com": "\u212Aelvin@example.com",
		"\u0130nci@example.com":   "\u0130nci@example.com",
		"ÄNNE@example.com":        "Änne@example.com",
		"\u2028x@example.com":     "\u2028x@example.com", // not whitespace to trim: ValidEmail refuses it
	} {
		if got := NormalizeEmail(in); got != want {
			t.Errorf("NormalizeEmail(%q) = %q, want %q", in, got, want)
		}
	}
	if NormalizeEmail("\u212Aelvin@example.com") == NormalizeEmail("kelvin@example.com") ||
		NormalizeEmail("\u0130nci@example.com") == NormalizeEmail("inci@example.com") {
		t.Fatal("two distinct addresses normalise to one")
	}
}

// TestValidEmailIsDifysValidator: what Dify's email validator accepts (api/libs/helper.py), and nothing that could break an
// HTTP header or a log line.
func TestValidEmailIsDifysValidator(t *testing.T) {
	for _, ok := range []string{
		"a@b.cd", "Ext.User@Partner.example", "o'brien+tag@mail.example.org", "x_y-z@sub-domain.example.io",
		"\u212Aelvin@example.com", "änne@bücher.example", "用户@例子.广告", "a!#$%&'*+-/=?^_`{|}~@x.example",
	} {
		if !ValidEmail(ok) {
			t.Errorf("ValidEmail(%q) = false, want true", ok)
		}
	}
	for _, bad := range []string{
		"", "a@b", "a@b.c", "@b.cd", "a@", "a@@b.cd", "a b@c.de", "a@b.cd\n", "\na@b.cd", "a@b.cd\x00",
		"a\x00b@c.de", "a\vb@c.de", "a\tb@c.de", "a\x7fb@c.de", "a\u0085b@c.de", "a\u2028b@c.de", "a\u2029b@c.de",
		"a\u00a0b@c.de", "a\u200bb@c.de", "a\u202eb@c.de", "a@c.de\u202e", "a\xffb@c.de", "a<b@c.de", "a@c_.de!",
		strings.Repeat("a", 251) + "@b.cd", // 256 characters: more than subject_email holds
	} {
		if ValidEmail(bad) {
			t.Errorf("ValidEmail(%q) = true, want false", bad)
		}
	}
}

func FuzzValidEmail(f *testing.F) {
	f.Add("a@b.cd")
	f.Add("a\u2028b@c.de")
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidEmail(s) {
			return
		}
		for _, r := range s {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 || r == ' ' {
				t.Fatalf("ValidEmail accepted %q with %U", s, r)
			}
		}
		if n := NormalizeEmail(s); !ValidEmail(n) {
			t.Fatalf("NormalizeEmail(%q) = %q is no longer valid", s, n)
		}
	})
}
