package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotFound: no live token matches (unknown hash, revoked, or owned by another subject).
	ErrNotFound = errors.New("tokens: not found")
	// ErrConflict: a write lost a race it cannot resolve by itself (e.g. a concurrent mint kept failing); retryable.
	ErrConflict = errors.New("tokens: conflicting concurrent write")
	// ErrPruneBusy: another replica holds the retention lock; this run did nothing.
	ErrPruneBusy = errors.New("tokens: retention prune already running elsewhere")
	// ErrAlreadyRevoked: the subject's own token exists but is no longer live (revoked or hard-expired). It is also
	// ErrNotFound, so a caller that only needs "no live token" treats both alike, while a revocation endpoint can answer a
	// retried revocation as the first one was answered.
	ErrAlreadyRevoked = fmt.Errorf("tokens: already revoked: %w", ErrNotFound)
	// ErrDeviceTaken: the device's slot (stored email, issuer, client, device label: the per-device unique index) holds
	// another subject's live token. Emails are stored lower-cased, so two Dify accounts whose emails differ only in letter
	// case share slots; the mint changes nothing, and the other account keeps its token. Not retryable.
	ErrDeviceTaken = errors.New("tokens: this device label already has a live token of another subject with the same email")
)

// Subject identifies who owns tokens. An account owns the rows with its AccountID; an external subject owns the rows with its
// (NormalizeEmail'd Email, Issuer) and no account id.
type Subject struct {
	Type      SubjectType
	AccountID string // accounts only
	Email     string // stored as NormalizeEmail returns it
	Issuer    string // "dify:account" for accounts; the IdP issuer for external subjects
}

// AccountIssuer is subject_issuer for account tokens.
const AccountIssuer = "dify:account"

// AccountSubject builds the subject of a Dify account.
func AccountSubject(accountID, email string) Subject {
	return Subject{Type: SubjectAccount, AccountID: accountID, Email: NormalizeEmail(email), Issuer: AccountIssuer}
}

// ExternalSubject builds the subject of an external SSO identity.
func ExternalSubject(email, issuer string) Subject {
	return Subject{Type: SubjectExternalSSO, Email: NormalizeEmail(email), Issuer: issuer}
}

// Token is one row of oauth_access_tokens. Times are instants; compare them with Equal, not ==.
type Token struct {
	ID            string
	SubjectEmail  string
	SubjectIssuer string
	AccountID     string // "" when NULL (external subjects)
	ClientID      string
	DeviceLabel   string
	Prefix        string
	TokenHash     string // "" when NULL (revoked or hard-expired)
	CreatedAt     time.Time
	LastUsedAt    *time.Time
	ExpiresAt     time.Time
	RevokedAt     *time.Time
}

// Subject returns the owner of the row.
func (t Token) Subject() Subject {
	if t.AccountID != "" {
		return Subject{Type: SubjectAccount, AccountID: t.AccountID, Email: t.SubjectEmail, Issuer: t.SubjectIssuer}
	}
	return Subject{Type: SubjectExternalSSO, Email: t.SubjectEmail, Issuer: t.SubjectIssuer}
}

// Expired reports whether the token is past its expiry at now.
func (t Token) Expired(now time.Time) bool { return !now.Before(t.ExpiresAt) }

// MintRequest asks for a live token for one device of a subject.
type MintRequest struct {
	Subject     Subject
	ClientID    string
	DeviceLabel string
	Prefix      string // the kind's prefix, e.g. "dfoa_"
	TokenHash   string // Hash(plaintext); the plaintext never reaches a store
	Now         time.Time
	ExpiresAt   time.Time
}

// Minted is the outcome of a mint.
type Minted struct {
	Token Token
	// RotatedHash is the hash the mint replaced ("" for a fresh row). Callers must tombstone it and publish its revocation.
	RotatedHash string
}

// RevocationReason says how a hash was taken out of service.
type RevocationReason string

const (
	// ReasonRevoked: revoked by its subject (self-service, RFC 7009) or an operator; the row is dead for good.
	ReasonRevoked RevocationReason = "revoked"
	// ReasonRotated: replaced by a mint for the same device; the row lives on under a new hash.
	ReasonRotated RevocationReason = "rotated"
	// ReasonExpired: hard-expired when presented after its expiry; the row is dead for good.
	ReasonExpired RevocationReason = "expired"
)

// RevokedHash records a hash taken out of service. Revocation and hard-expire set the row's token_hash to NULL and rotation
// replaces it, so this record, written in the same statement as the change, is the only place the dead hash is still known:
// caches that may hold a positive entry under it are reconciled from it.
type RevokedHash struct {
	Hash      string
	TokenID   string
	RevokedAt time.Time
	Reason    RevocationReason
}

// Use is one authenticated use of a token: the request's time, by the clock of the service that authenticated it.
type Use struct {
	TokenID string
	At      time.Time
}

// Page selects a slice of a listing; Page counts from 1.
type Page struct {
	Page  int
	Limit int
}

// Store persists tokens. Every method honours ctx. Implementations must pass storetest's conformance suite.
type Store interface {
	// Mint creates the live token of a subject's (client, device label), or rotates the subject's existing live row for it in
	// place (new hash, new created/expiry, same id) in one atomic step, so there are never two live tokens for one device. The
	// existing row is the subject's own: an account's by account id (its stored email follows the account's), an external
	// subject's by email and issuer. A slot held by another subject (ErrDeviceTaken) is left alone.
	Mint(ctx context.Context, req MintRequest) (Minted, error)
	// LookupByHash returns the live (not revoked) row with this hash, expired or not; ErrNotFound otherwise.
	LookupByHash(ctx context.Context, hash string) (Token, error)
	// HardExpire revokes an expired token by id with a compare-and-set (revoked_at = now, token_hash = NULL where still live).
	// hit is true only for the one caller whose update changed the row.
	HardExpire(ctx context.Context, id string, now time.Time) (hit bool, err error)
	// Revoke revokes the live token id owned by s and returns it as it was before (with its hash, for the tombstone).
	// A token of another subject, or none, is ErrNotFound; a token of s that is no longer live is ErrAlreadyRevoked.
	Revoke(ctx context.Context, s Subject, id string, now time.Time) (Token, error)
	// ListLive returns the subject's live, unexpired tokens, newest first, and how many there are in all.
	ListLive(ctx context.Context, s Subject, now time.Time, p Page) (tokens []Token, total int, err error)
	// RevokedSince returns the hashes that Revoke, HardExpire and rotating Mints took out of service at or after since (by
	// the time those calls were given), oldest first. Each is recorded atomically with its change, so a committed revocation
	// is listed even when the caller that made it never reached the caches.
	RevokedSince(ctx context.Context, since time.Time) ([]RevokedHash, error)
	// LookupRevoked returns the record of a hash taken out of service; ErrNotFound for a live, unknown or pruned hash.
	LookupRevoked(ctx context.Context, hash string) (RevokedHash, error)
	// RecordLastUsed moves last_used_at forward to each use's time, on rows that are live and were minted (or last rotated)
	// at or before it: a use never reaches a revoked row, nor the token that replaced the one used. An earlier time than
	// the stored one, an unknown id and a row another writer has locked are skipped, never waited for; several uses of one
	// id count as its latest. written is how many rows changed.
	RecordLastUsed(ctx context.Context, uses []Use) (written int, err error)
	// Prune deletes rows revoked before cutoff, or unrevoked and expired before cutoff, in batches of batchSize, and returns how
	// many it deleted; revocation records older than cutoff go too (not counted). Only one replica prunes at a time: a
	// concurrent call returns ErrPruneBusy.
	Prune(ctx context.Context, cutoff time.Time, batchSize int) (deleted int, err error)
}
