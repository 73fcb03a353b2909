package tokens

import (
	"strings"
	"testing"
)

func TestParseAuthorization(t *testing.T) {
	const tok = "dfoa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	cases := []struct {
		in    string
		token string
		out   AuthorizationOutcome
	}{
		{"Bearer " + tok, tok, BearerPresent},
		{"bearer " + tok, tok, BearerPresent},
		{"BEARER   " + tok + "  ", tok, BearerPresent},
		{"", "", BearerMissing},
		{"Bearer", "", BearerMissing},
		{"Bearer   ", "", BearerMissing},
		{"Basic dXNlcjpwYXNz", "", BearerMissing},
		{"Token " + tok, "", BearerMissing},
		{"Bearer " + tok + ",Bearer " + tok, "", BearerSeveral},
		{"Bearer a,b", "", BearerSeveral},
		{"Bearer a b", "", BearerSeveral},
		{"Bearer " + strings.Repeat("x", MaxAuthorization), "", BearerTooLarge},
		{"Bearer not-a-token", "not-a-token", BearerPresent}, // the credential's format is Parse's job
	}
	for _, c := range cases {
		token, out := ParseAuthorization(c.in)
		if token != c.token || out != c.out {
			t.Errorf("ParseAuthorization(%.40q) = %q, %d; want %q, %d", c.in, token, out, c.token, c.out)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{"Bearer dfoa_x", "bearer a,b", "", "Basic x", "Bearer  a  b", strings.Repeat("B", 5000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		token, out := ParseAuthorization(value)
		if out != BearerPresent {
			if token != "" {
				t.Fatalf("ParseAuthorization(%q) returned token %q with outcome %d", value, token, out)
			}
			return
		}
		if token == "" || strings.ContainsAny(token, " \t,") || len(value) > MaxAuthorization {
			t.Fatalf("ParseAuthorization(%q) accepted %q", value, token)
		}
	})
}
