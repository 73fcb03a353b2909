// Package rules holds the input rules both token store adapters apply before touching storage, so that Postgres and the
// in-memory store accept and reject exactly the same requests.
package rules

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/tokens"
)

// Precision is what a timestamptz keeps; the in-memory store truncates to it so both stores hand back the same instants.
const Precision = time.Microsecond

// ErrInvalidMint: a mint request that no caller should build (a programming error, not a client error).
var ErrInvalidMint = errors.New("store: invalid mint request")

// MintRow is a validated mint request with its subject normalised as stored.
type MintRow struct {
	Email, Issuer, AccountID string // AccountID "" for external subjects
	ClientID, DeviceLabel    string
	Prefix, TokenHash        string
	CreatedAt, ExpiresAt     time.Time
}

// Mint validates req. An empty issuer is refused because the per-device unique index treats NULLs as distinct: a row without
// an issuer could never be rotated.
func Mint(req tokens.MintRequest) (MintRow, error) {
	s := req.Subject
	row := MintRow{
		Email: tokens.NormalizeEmail(s.Email), Issuer: s.Issuer, ClientID: req.ClientID, DeviceLabel: req.DeviceLabel,
		Prefix: req.Prefix, TokenHash: req.TokenHash,
		CreatedAt: req.Now.Truncate(Precision), ExpiresAt: req.ExpiresAt.Truncate(Precision),
	}
	kind, ok := tokens.KindForPrefix(req.Prefix)
	switch {
	case !ok:
		return MintRow{}, fmt.Errorf("%w: unknown prefix %q", ErrInvalidMint, req.Prefix)
	case kind.Subject != s.Type:
		return MintRow{}, fmt.Errorf("%w: prefix %q is not for subject type %q", ErrInvalidMint, req.Prefix, s.Type)
	case row.Email == "" || row.Issuer == "" || row.ClientID == "" || row.DeviceLabel == "":
		return MintRow{}, fmt.Errorf("%w: subject email, issuer, client id and device label are required", ErrInvalidMint)
	case !isTokenHash(row.TokenHash):
		return MintRow{}, fmt.Errorf("%w: token hash is not 64 lower-case hex characters", ErrInvalidMint)
	case !row.ExpiresAt.After(row.CreatedAt):
		return MintRow{}, fmt.Errorf("%w: expiry is not after creation", ErrInvalidMint)
	case !headerSafe(row.Email) || utf8.RuneCountInString(row.Email) > tokens.MaxEmailLen:
		// The stored email goes to the upstream in x-authgate-subject-email.
		return MintRow{}, fmt.Errorf("%w: subject email is not valid UTF-8, holds a control or separator character, or is "+
			"longer than %d characters", ErrInvalidMint, tokens.MaxEmailLen)
	}
	if s.Type == tokens.SubjectAccount {
		id, ok := ids.Canonical(s.AccountID)
		if !ok {
			return MintRow{}, fmt.Errorf("%w: account subject without a UUID account id", ErrInvalidMint)
		}
		row.AccountID = id
	} else {
		switch {
		case s.AccountID != "":
			return MintRow{}, fmt.Errorf("%w: external subject with an account id", ErrInvalidMint)
		case row.Issuer == tokens.AccountIssuer:
			// It would share the slots (the per-device unique index) of the account with this email.
			return MintRow{}, fmt.Errorf("%w: external subject with the account issuer %q", ErrInvalidMint, tokens.AccountIssuer)
		case !tokens.ValidEmail(row.Email):
			return MintRow{}, fmt.Errorf("%w: external subject email is not an email Dify would accept", ErrInvalidMint)
		}
	}
	return row, nil
}

// headerSafe: valid UTF-8 without control, format or line/paragraph separator characters. An account's email comes from
// Dify's directory and is not held to Dify's validator here (older accounts may predate it), only to what a header can carry.
func headerSafe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return false
		}
	}
	return true
}

func isTokenHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Owner is the ownership test of a subject: an account by its id; an external subject by its email (NormalizeEmail: ASCII
// letters folded, nothing else) and issuer, on rows without an account. ok is false for a subject that can own nothing (so every lookup is "not found").
type Owner struct {
	AccountID     string // set for accounts
	Email, Issuer string // set for external subjects
}

// OwnerOf returns the ownership test for s.
func OwnerOf(s tokens.Subject) (o Owner, ok bool) {
	switch s.Type {
	case tokens.SubjectAccount:
		id, ok := ids.Canonical(s.AccountID)
		return Owner{AccountID: id}, ok
	case tokens.SubjectExternalSSO:
		email := tokens.NormalizeEmail(s.Email)
		return Owner{Email: email, Issuer: s.Issuer}, email != "" && s.Issuer != ""
	}
	return Owner{}, false
}

// Owns reports whether the row belongs to o.
func (o Owner) Owns(t tokens.Token) bool {
	if o.AccountID != "" {
		return t.AccountID == o.AccountID
	}
	return t.AccountID == "" && tokens.NormalizeEmail(t.SubjectEmail) == o.Email && t.SubjectIssuer == o.Issuer
}

// ErrInvalidPage: a listing page below 1 or a limit below 1.
var ErrInvalidPage = errors.New("store: invalid page")

// Window returns the offset and limit of a page; a page too far out to address yields an offset past any listing.
func Window(p tokens.Page) (offset, limit int, err error) {
	if p.Page < 1 || p.Limit < 1 {
		return 0, 0, fmt.Errorf("%w: page %d, limit %d", ErrInvalidPage, p.Page, p.Limit)
	}
	if p.Page-1 > math.MaxInt32/p.Limit {
		return math.MaxInt32, p.Limit, nil
	}
	return (p.Page - 1) * p.Limit, p.Limit, nil
}

// ErrInvalidBatch: a prune batch size below 1.
var ErrInvalidBatch = errors.New("store: prune batch size must be at least 1")

// LastUses is what both adapters write for a batch of uses: ids in canonical form (others are dropped: no row has them),
// times at the stores' precision, one use per id (its latest), sorted by id.
func LastUses(uses []tokens.Use) []tokens.Use {
	latest := make(map[string]time.Time, len(uses))
	for _, u := range uses {
		id, ok := ids.Canonical(u.TokenID)
		if !ok || u.At.IsZero() {
			continue
		}
		at := u.At.Truncate(Precision)
		if prev, seen := latest[id]; !seen || at.After(prev) {
			latest[id] = at
		}
	}
	out := make([]tokens.Use, 0, len(latest))
	for id, at := range latest {
		out = append(out, tokens.Use{TokenID: id, At: at})
	}
	slices.SortFunc(out, func(a, b tokens.Use) int { return strings.Compare(a.TokenID, b.TokenID) })
	return out
}
