package tokencache

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokens"
)

const (
	// defaultReconcileInterval is how often a Reconciler reads Postgres: a revocation whose publish failed is denied by every
	// replica within about this long of its commit.
	defaultReconcileInterval = 300 * time.Millisecond
	// reconcileQueryTimeout bounds one read of the revocation records.
	reconcileQueryTimeout = 2 * time.Second
	// reconcileWriteTimeout bounds one round trip of tombstone writes, so a hung Redis costs a tick this long at most (and
	// nothing once the health breaker has opened).
	reconcileWriteTimeout = 500 * time.Millisecond
	// reconcileWriteBatch bounds the tombstones written in one round trip.
	reconcileWriteBatch = 1000
	// revocationClockSkew widens the window for clocks that disagree: revoked_at is the revoking process's clock, compared
	// with this one's.
	revocationClockSkew = 5 * time.Second
)

// RevocationLog is where committed revocations are read back: tokens.Store's records of hashes taken out of service.
type RevocationLog interface {
	RevokedSince(ctx context.Context, since time.Time) ([]tokens.RevokedHash, error)
}

// ReconcilerOptions configure a Reconciler; zero values take the defaults.
type ReconcilerOptions struct {
	// Interval between reads of the revocation records (default 300 ms).
	Interval time.Duration
	Logger   *slog.Logger
	// Throttle limits the warnings of a Postgres or Redis outage to a few lines; nil means one of its own (10 s).
	Throttle *telemetry.Throttle
}

// Reconciler makes revocations that Postgres committed take effect in the cache even when the request that made them could
// not publish them. Every tick it reads the revocations of the last cache TTL + margin (one indexed query), denies those
// hashes in the Cache (Get answers Invalid and Local nothing, without asking Redis), evicts them from the in-process layer,
// and writes each one's tombstone into Redis until a write is confirmed, so Dify and every other reader see it too. A hash
// stays denied while its tombstone is unwritten, even past the window: a positive fill sent into a hung Redis may still be
// executed when it resumes, and only the tombstone written after that overwrites it.
type Reconciler struct {
	c        *Cache
	src      RevocationLog
	interval time.Duration
	window   time.Duration
	log      *slog.Logger
	throttle *telemetry.Throttle
	now      func() time.Time

	// Owned by the Run goroutine.
	known       map[string]*revocation
	writeFailed bool // the last tombstone write failed: the next success is logged
}

type revocation struct {
	until   time.Time // end of the window: no cache can hold a positive entry for the hash after it
	written bool      // the tombstone is confirmed in Redis
}

// NewReconciler returns a reconciler for c reading src. Run it once per Cache.
func NewReconciler(c *Cache, src RevocationLog, opts ReconcilerOptions) *Reconciler {
	r := &Reconciler{c: c, src: src, interval: opts.Interval, log: opts.Logger, throttle: opts.Throttle,
		window: c.ttl + tombstoneMargin + revocationClockSkew, now: time.Now, known: map[string]*revocation{}}
	if r.interval <= 0 {
		r.interval = defaultReconcileInterval
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.throttle == nil {
		r.throttle = telemetry.NewThrottle(0)
	}
	return r
}

// Run reconciles at once and then every interval until ctx ends; it returns nil then.
func (r *Reconciler) Run(ctx context.Context) error {
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	for {
		r.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// reconcile is one tick.
func (r *Reconciler) reconcile(ctx context.Context) {
	now := r.now()
	fresh, changed := r.learn(ctx, now)
	for h, rv := range r.known {
		if rv.written && !now.Before(rv.until) {
			delete(r.known, h)
			changed = true
		}
	}
	if changed {
		set := make(map[string]struct{}, len(r.known))
		for h := range r.known {
			set[h] = struct{}{}
		}
		r.c.denied.Store(&set)
	}
	// After the deny set is published: the eviction bumps the layer's generation, so a lookup that read Redis before it saw
	// the denial cannot store what it read.
	if len(fresh) > 0 && r.c.local != nil {
		r.c.local.evict(fresh...)
	}
	r.writeTombstones(ctx, now)
}

// learn reads the recent revocations and adds the ones not yet known; it returns them.
func (r *Reconciler) learn(ctx context.Context, now time.Time) (fresh []string, changed bool) {
	qctx, cancel := context.WithTimeout(ctx, reconcileQueryTimeout)
	defer cancel()
	list, err := r.src.RevokedSince(qctx, now.Add(-r.window))
	if err != nil {
		if ctx.Err() == nil {
			r.throttle.Log(ctx, r.log, slog.LevelWarn, "reconcile-read",
				"token cache: cannot read revocations from Postgres; hashes already known stay denied", "error", err)
		}
		return nil, false
	}
	for _, rh := range list {
		until := rh.RevokedAt.Add(r.window)
		if rv, ok := r.known[rh.Hash]; ok {
			if until.After(rv.until) {
				rv.until = until
			}
			continue
		}
		if !now.Before(until) {
			continue
		}
		r.known[rh.Hash] = &revocation{until: until}
		fresh = append(fresh, rh.Hash)
	}
	return fresh, len(fresh) > 0
}

// writeTombstones writes the tombstone of every known hash whose write is not confirmed, in one round trip. The SET is
// idempotent and overwrites whatever is there: the hash is dead for good.
func (r *Reconciler) writeTombstones(ctx context.Context, now time.Time) {
	var pending []string
	for h, rv := range r.known {
		if !rv.written {
			pending = append(pending, h)
			if len(pending) == reconcileWriteBatch {
				break
			}
		}
	}
	if len(pending) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, reconcileWriteTimeout)
	defer cancel()
	pipe := r.c.rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(pending))
	for i, h := range pending {
		// At least the margin: past the window it only has to outlive fills that were in flight when Redis hung.
		cmds[i] = pipe.Set(wctx, redisKey(h), tombstone, max(r.known[h].until.Sub(now), tombstoneMargin))
	}
	_, _ = pipe.Exec(wctx) // errors are per command
	written, failed := 0, 0
	var lastErr error
	for i, cmd := range cmds {
		if ok, err := cmd.Result(); err != nil || ok != "OK" {
			failed++
			lastErr = err
			continue
		}
		r.known[pending[i]].written = true
		written++
	}
	switch {
	case failed > 0 && ctx.Err() == nil:
		r.writeFailed = true
		r.throttle.Log(ctx, r.log, slog.LevelWarn, "reconcile-write",
			"token cache: cannot write revocation tombstones to Redis; this replica denies the tokens meanwhile",
			"pending", failed, "error", lastErr)
	case failed == 0 && r.writeFailed:
		r.writeFailed = false
		r.log.InfoContext(ctx, "token cache: revocation tombstones written after Redis recovered", "written", written)
	}
}
