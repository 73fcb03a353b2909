package tokencache

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// revocationStream carries revoked hashes to every in-process layer.
	revocationStream = "authgate:revocations"
	// streamMaxLen caps the stream (approximately, so trimming stays cheap); a reader further behind than this flushes.
	streamMaxLen = 10_000
	// tombstoneMargin keeps a tombstone alive past any positive entry written just before it, and past any fill computed
	// from a Postgres read that started before the revocation.
	tombstoneMargin = 10 * time.Second
	// publishTimeout bounds a whole Revoke. Postgres holds the revocation and every extauthz reconciles its caches from it,
	// so a hung Redis must not hold the request that revoked: it gives up and lets the reconcilers finish the job.
	publishTimeout = 750 * time.Millisecond
)

// Revoker kills cached tokens everywhere: in Redis at once, in every in-process layer within a second.
type Revoker struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// NewRevoker returns a Revoker for caches whose TTL is cacheTTL (TOKEN_CACHE_TTL; 0 means 60 s).
func NewRevoker(rdb redis.UniversalClient, cacheTTL time.Duration) *Revoker {
	if cacheTTL <= 0 {
		cacheTTL = defaultTTL
	}
	return &Revoker{rdb: rdb, ttl: cacheTTL + tombstoneMargin}
}

// Revoke tombstones hash and then publishes it on the revocation stream, within publishTimeout (or ctx's earlier deadline).
// The order matters: an in-process layer that drops the hash on the event and reads Redis again must find the tombstone.
// Call it after the Postgres change is committed. An error is not a lost revocation: the change recorded the hash in Postgres
// and every Reconciler denies it and writes the tombstone within a second of Redis answering; the caller should report it.
func (r *Revoker) Revoke(ctx context.Context, hash string) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := r.rdb.Set(ctx, redisKey(hash), tombstone, r.ttl).Err(); err != nil {
		return err
	}
	return r.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: revocationStream,
		MaxLen: streamMaxLen,
		Approx: true,
		Values: []any{"hash", hash},
	}).Err()
}
