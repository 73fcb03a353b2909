package tokens

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// NormalizeEmail is how emails are stored and compared: surrounding ASCII whitespace removed and ASCII letters lower-cased,
// nothing else. Unicode case folding is deliberately not used: it maps distinct addresses onto one (the Kelvin sign U+212A
// folds to "k", U+0130 to "i"), which would let two external subjects share an owner. Postgres compares owners the same way
// (internal/store/postgres, ownerCondition), never with lower(), which folds like Unicode.
func NormalizeEmail(email string) string {
	email = strings.Trim(email, " \t\n\v\f\r")
	for i := 0; i < len(email); i++ {
		if c := email[i]; c >= 'A' && c <= 'Z' {
			return lowerASCII(email)
		}
	}
	return email
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// MaxEmailLen is the length of subject_email (varchar(255), characters).
const MaxEmailLen = 255

// difyEmail is Dify's email validator (api/libs/helper.py, email): a local part of word characters and
// .!#$%&'*+-/=?^_`{|}~, an "@", then dot-separated labels of word characters and "-", the last at least two long. Python's
// \w is Unicode-aware (letters, digits and "_"), hence \pL\pN here; Go's \w would be ASCII-only. Unlike Python's "$" this
// one does not match before a trailing newline.
var difyEmail = regexp.MustCompile("^[\\pL\\pN_.!#$%&'*+\\-/=?^`{|}~]+@([\\pL\\pN_-]+\\.)+[\\pL\\pN_-]{2,}$")

// ValidEmail reports whether s is an email Dify itself would accept, and short enough to store. Such an email has no control,
// whitespace, separator or format character (no NUL, VT, U+0085, U+2028, bidi override or zero-width space), so it is safe in
// an HTTP header and a log line; letters outside ASCII are accepted, as Dify accepts them, and kept distinct by NormalizeEmail.
func ValidEmail(s string) bool {
	return utf8.ValidString(s) && utf8.RuneCountInString(s) <= MaxEmailLen && difyEmail.MatchString(s)
}
