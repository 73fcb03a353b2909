package ids

import (
	"regexp"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", true},
		{"3F2504E0-4F89-11D3-9A0C-0305E82C3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", true},
		{"3f2504e04f8911d39a0c0305e82c3301", "", false},
		{"{3f2504e0-4f89-11d3-9a0c-0305e82c330}", "", false},
		{"urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301", "", false},
		{"3f2504e0-4f89-11d3-9a0c-0305e82c330g", "", false},
		{"3f2504e0x4f89-11d3-9a0c-0305e82c3301", "", false},
		{"", "", false},
		{"../../etc/passwd", "", false},
	}
	for _, c := range cases {
		got, ok := Canonical(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
		if Valid(c.in) != c.ok {
			t.Errorf("Valid(%q) = %v", c.in, !c.ok)
		}
	}
}

func TestNewIsCanonicalAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := New()
		if c, ok := Canonical(id); !ok || c != id || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("New() = %q is not a canonical version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}

var uuidText = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// FuzzCanonical: accepted exactly when the text is 8-4-4-4-12 hex, and then returned lower-cased and stable.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01", "0B6F3A4E-8C1D-4E2F-9A3B-5C6D7E8F9A01",
		"0b6f3a4e8c1d4e2f9a3b5c6d7e8f9a01", "{0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01}", "0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a0g",
		"", "not-a-uuid", "' OR 1=1 --", "0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a0\u00e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := Canonical(s)
		if ok != uuidText.MatchString(s) {
			t.Fatalf("Canonical(%q) ok = %v, regexp says %v", s, ok, !ok)
		}
		if !ok {
			return
		}
		if c != strings.ToLower(s) {
			t.Fatalf("Canonical(%q) = %q, want it lower-cased", s, c)
		}
		if again, ok := Canonical(c); !ok || again != c {
			t.Fatalf("Canonical is not stable on %q", c)
		}
	})
}
