package tokencache

import (
	"encoding/json"
	"errors"
	"time"
)

// Entry is Dify's cached token record. VerifiedTenants is shared with the cache: read it, never modify it.
type Entry struct {
	SubjectEmail    string
	SubjectIssuer   string
	AccountID       string // "" for external subjects (null in JSON)
	ClientID        string
	TokenID         string
	ExpiresAt       time.Time
	VerifiedTenants map[string]bool // tenant id -> membership verdict
}

// wireEntry is the JSON Dify writes and reads at auth:token:<hash>.
type wireEntry struct {
	SubjectEmail    string          `json:"subject_email"`
	SubjectIssuer   *string         `json:"subject_issuer"`
	AccountID       *string         `json:"account_id"`
	ClientID        string          `json:"client_id"`
	TokenID         string          `json:"token_id"`
	ExpiresAt       string          `json:"expires_at"`
	VerifiedTenants map[string]bool `json:"verified_tenants"`
}

// expiresAtLayout is Python's datetime.isoformat() of an aware UTC datetime with microseconds, which every Python version's
// datetime.fromisoformat reads back.
const expiresAtLayout = "2006-01-02T15:04:05.000000+00:00"

// expiresAtLayouts are what we accept: RFC 3339 with any offset, and Python's naive isoformat (Dify stores naive UTC).
var expiresAtLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999"}

var errUnusable = errors.New("tokencache: unusable entry")

func encode(e Entry) ([]byte, error) {
	w := wireEntry{
		SubjectEmail:    e.SubjectEmail,
		SubjectIssuer:   &e.SubjectIssuer,
		ClientID:        e.ClientID,
		TokenID:         e.TokenID,
		ExpiresAt:       e.ExpiresAt.UTC().Format(expiresAtLayout),
		VerifiedTenants: e.VerifiedTenants,
	}
	if e.AccountID != "" {
		w.AccountID = &e.AccountID
	}
	if w.VerifiedTenants == nil {
		w.VerifiedTenants = map[string]bool{} // Dify reads a dict, never null
	}
	return json.Marshal(w)
}

// decode rejects anything that is not a whole entry: a cached value we do not fully understand is treated as absent.
func decode(b []byte) (Entry, error) {
	var w wireEntry
	if err := json.Unmarshal(b, &w); err != nil {
		return Entry{}, err
	}
	if w.TokenID == "" || w.SubjectEmail == "" || w.ClientID == "" {
		return Entry{}, errUnusable
	}
	exp, err := parseExpiresAt(w.ExpiresAt)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{
		SubjectEmail:    w.SubjectEmail,
		ClientID:        w.ClientID,
		TokenID:         w.TokenID,
		ExpiresAt:       exp,
		VerifiedTenants: w.VerifiedTenants,
	}
	if w.SubjectIssuer != nil {
		e.SubjectIssuer = *w.SubjectIssuer
	}
	if w.AccountID != nil {
		e.AccountID = *w.AccountID
	}
	return e, nil
}

func parseExpiresAt(s string) (time.Time, error) {
	for _, layout := range expiresAtLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil // a value without offset is UTC, as Dify stores it
		}
	}
	return time.Time{}, errUnusable
}
