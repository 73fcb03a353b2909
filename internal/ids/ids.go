// Package ids checks the row ids that clients put in paths and queries. Dify's ids are UUIDs; one that is not in the canonical
// 8-4-4-4-12 form cannot name a row, so it is refused before any lookup instead of becoming a SQL error.
package ids

import "github.com/google/uuid"

// Canonical returns s lower-cased, as Postgres prints a uuid, and whether s is a UUID in the canonical layout. uuid.Parse alone
// also accepts braces, a urn: prefix and the 32-digit form, which no Dify URL uses.
func Canonical(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// Valid reports whether s is a canonical UUID.
func Valid(s string) bool {
	_, ok := Canonical(s)
	return ok
}

// New returns a random (version 4) UUID.
func New() string { return uuid.NewString() }
