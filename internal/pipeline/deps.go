package pipeline

import (
	"context"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// The pipeline's dependencies, as small consumer-side interfaces; cmd/extauthz adapts the real packages to them.

// RateLimiter is a sliding-window limiter shared by all replicas (internal/ratelimit).
type RateLimiter interface {
	// Allow checks and counts one request atomically; denied requests are not counted.
	Allow(ctx context.Context, key string, limit int, window time.Duration) (RateDecision, error)
	// Exceeded checks without counting.
	Exceeded(ctx context.Context, key string, limit int, window time.Duration) (RateDecision, error)
	// Add counts one event unconditionally.
	Add(ctx context.Context, key string, window time.Duration) error
}

// LocalRateLimiter is a RateLimiter that can sometimes decide from process memory (a known denial, a batched local
// admission). A Check asks it first, so such a decision costs no Redis deadline.
type LocalRateLimiter interface {
	// AllowLocal is Allow when it needs no Redis call; ok false means nothing was counted and Allow must be called.
	AllowLocal(key string, limit int, window time.Duration) (d RateDecision, ok bool)
}

// CallBoundedRateLimiter is a RateLimiter that bounds each of its Redis calls itself (to RedisCallTimeout, or less), so a
// Check hands Allow its own context and builds no deadline for the call.
type CallBoundedRateLimiter interface {
	BoundsCalls() bool
}

// RateDecision is a limiter's verdict.
type RateDecision struct {
	Allowed          bool
	Limit, Remaining int
	RetryAfter       time.Duration // >= 1 s when denied
	Reset            time.Duration
	Local            bool // decided from process memory, without Redis
}

// CacheStatus is the outcome of a token cache read.
type CacheStatus int

const (
	CacheMiss    CacheStatus = iota
	CacheHit                 // a live entry
	CacheInvalid             // a tombstone (or a negative entry another writer left)
)

// TokenEntry is what the token cache keeps per token hash (Dify's auth:token:<hash> JSON).
type TokenEntry struct {
	SubjectEmail    string
	SubjectIssuer   string
	AccountID       string // "" for external subjects
	ClientID        string
	TokenID         string
	ExpiresAt       time.Time
	VerifiedTenants map[string]bool
}

// TokenCache is the Redis token cache with its optional in-process layer (internal/tokencache).
type TokenCache interface {
	Get(ctx context.Context, hash string) (TokenEntry, CacheStatus, error)
	// Local is a hit Get would serve from process memory, without Redis (false when there is none).
	Local(hash string) (TokenEntry, bool)
	// Fill stores a live entry unless one (or a tombstone) is there already.
	Fill(ctx context.Context, hash string, e TokenEntry) error
	// RecordVerdict merges a membership verdict into an existing live entry.
	RecordVerdict(ctx context.Context, hash, tenantID string, member bool) error
}

// TokenStore is the part of tokens.Store the pipeline uses.
type TokenStore interface {
	LookupByHash(ctx context.Context, hash string) (tokens.Token, error)
	HardExpire(ctx context.Context, id string, now time.Time) (hit bool, err error)
}

// TokenAccountStore is a TokenStore that reads, in the same query as a token's row, the row's account (the zero Account
// when it has none or the account does not exist) and whether that account is an active member of tenantID (false for
// ""): a token no cache knows then costs a Check one Postgres round trip instead of up to three. Both stores implement it.
type TokenAccountStore interface {
	LookupByHashWithAccount(ctx context.Context, hash, tenantID string) (tokens.Token, directory.Account, bool, error)
}

// Directory is the part of directory.Directory the pipeline uses.
type Directory interface {
	AppWithTenant(ctx context.Context, appID string) (directory.App, directory.Tenant, bool, error)
	Account(ctx context.Context, id string) (directory.Account, error)
	IsActiveMember(ctx context.Context, tenantID, accountID string) (bool, error)
}

// Enterprise is Dify's enterprise service (internal/enterprise); nil on CE.
type Enterprise interface {
	LicenseStatus(ctx context.Context) (string, error)
	WebAppAccessMode(ctx context.Context, appID string) (string, error)
	IsUserAllowed(ctx context.Context, userID, appID string) (bool, error)
}
