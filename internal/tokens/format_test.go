package tokens

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// documentedFormat is the token format of docs/reference/check.md (bearer step), verbatim.
var documentedFormat = regexp.MustCompile(`^(dfoa|dfoe)_[A-Za-z0-9_-]{43}$`)

func TestGenerateMatchesSpecFormat(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds {
		for range 500 {
			tok, err := Generate(k)
			if err != nil {
				t.Fatal(err)
			}
			if !documentedFormat.MatchString(tok) || !strings.HasPrefix(tok, k.Prefix) {
				t.Fatalf("Generate(%s) = %q, not of the documented format", k.Prefix, tok)
			}
			if seen[tok] {
				t.Fatalf("Generate returned %q twice", tok)
			}
			seen[tok] = true
			got, err := Parse(tok)
			if err != nil || got.Prefix != k.Prefix {
				t.Fatalf("Parse(Generate(%s)) = %+v, %v", k.Prefix, got, err)
			}
		}
	}
}

func TestGenerateUsesEveryAlphabetCharacter(t *testing.T) {
	// 32 random bytes per token: after a few hundred tokens every base64url character has appeared, including - and _.
	// A generator that drew from a smaller alphabet (or hex) would miss some.
	seen := map[rune]bool{}
	for range 400 {
		tok, err := Generate(Account)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range tok[len(Account.Prefix):] {
			seen[c] = true
		}
	}
	if len(seen) != 64 {
		t.Fatalf("generated tokens used %d distinct characters, want all 64 of base64url", len(seen))
	}
}

func TestParse(t *testing.T) {
	secret := strings.Repeat("A", 43)
	cases := []struct {
		name  string
		token string
		want  SubjectType // "" = ErrMalformed
	}{
		{"account", "dfoa_" + secret, SubjectAccount},
		{"external", "dfoe_" + secret, SubjectExternalSSO},
		{"every alphabet class", "dfoa_" + "abcXYZ019-_" + strings.Repeat("q", 32), SubjectAccount},
		{"empty", "", ""},
		{"prefix only", "dfoa_", ""},
		{"Dify app key", "app-" + strings.Repeat("a", 24), ""},
		{"Dify app key, token length", "app-" + secret + "x", ""},
		{"personal access token", "dfp_" + secret, ""},
		{"unknown prefix of the right length", "dfox_" + secret, ""},
		{"upper-case prefix", "DFOA_" + secret, ""},
		{"prefix without underscore", "dfoa" + secret + "A", ""},
		{"one short", "dfoa_" + secret[:42], ""},
		{"one long", "dfoa_" + secret + "A", ""},
		{"padding", "dfoa_" + secret[:42] + "=", ""},
		{"standard base64 plus", "dfoa_" + secret[:42] + "+", ""},
		{"standard base64 slash", "dfoa_" + secret[:42] + "/", ""},
		{"dot", "dfoa_" + secret[:42] + ".", ""},
		{"space inside", "dfoa_" + secret[:21] + " " + secret[:21], ""},
		{"leading space", " dfoa_" + secret[:42], ""},
		{"trailing space", "dfoa_" + secret[:42] + " ", ""},
		{"trailing newline", "dfoa_" + secret[:42] + "\n", ""},
		{"tab", "dfoa_" + secret[:42] + "\t", ""},
		{"NUL", "dfoa_" + secret[:42] + "\x00", ""},
		{"non-ASCII letter", "dfoa_" + secret[:41] + "é", ""},
		{"bearer scheme included", "Bearer dfoa_" + secret, ""},
	}
	for _, c := range cases {
		k, err := Parse(c.token)
		if c.want == "" {
			if !errors.Is(err, ErrMalformed) || k.Prefix != "" {
				t.Errorf("%s: Parse(%q) = %+v, %v; want ErrMalformed", c.name, c.token, k, err)
			}
			continue
		}
		if err != nil || k.Subject != c.want {
			t.Errorf("%s: Parse(%q) = %+v, %v; want subject %s", c.name, c.token, k, err, c.want)
		}
	}
}

func TestHashIsHexSHA256(t *testing.T) {
	// sha256("abc") from FIPS 180-2, so the test does not just repeat the implementation.
	if got := Hash("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("Hash(abc) = %s", got)
	}
	tok := "dfoa_" + strings.Repeat("Z", 43)
	sum := sha256.Sum256([]byte(tok))
	if got := Hash(tok); got != hex.EncodeToString(sum[:]) || len(got) != 64 || strings.ToLower(got) != got {
		t.Fatalf("Hash(%q) = %q, want 64 lower-case hex characters of sha256", tok, got)
	}
}

// FuzzParse checks that Parse accepts exactly the documented format: whatever it accepts matches the regexp, keeps its prefix, and
// parses again to the same kind; whatever matches the regexp it accepts. Seeds: f.Add below and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	secret := strings.Repeat("A", 43)
	for _, seed := range []string{
		"", "dfoa_" + secret, "dfoe_" + secret, "dfoa_" + secret[:42], "dfoa_" + secret + "A", "app-" + secret,
		"dfp_" + secret, "dfoa_" + secret[:42] + "=", "dfoa_" + secret[:42] + " ", "dfoa_" + secret[:41] + "é",
		"dfoe_" + strings.Repeat("-_", 21) + "z", "\x00", "dfoa__" + secret[:42],
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		k, err := Parse(token)
		matches := documentedFormat.MatchString(token)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) error %v is not ErrMalformed", token, err)
			}
			if matches {
				t.Fatalf("Parse rejected %q, which has the documented format", token)
			}
			return
		}
		if !matches {
			t.Fatalf("Parse accepted %q, which does not have the documented format", token)
		}
		if !strings.HasPrefix(token, k.Prefix) {
			t.Fatalf("Parse(%q) = kind %s, not the token's prefix", token, k.Prefix)
		}
		again, err := Parse(k.Prefix + token[len(k.Prefix):])
		if err != nil || again.Prefix != k.Prefix || again.Subject != k.Subject {
			t.Fatalf("Parse does not round trip %q: %+v, %v", token, again, err)
		}
		if h := Hash(token); len(h) != 64 {
			t.Fatalf("Hash of an accepted token has %d characters", len(h))
		}
	})
}
