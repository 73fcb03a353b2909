// Package ratelimit is Dify's sliding-window limiter over Redis sorted sets, shared by every replica and by Dify itself:
// one sorted set per bucket, scored by whole seconds of Redis's own clock, entries older than the window dropped on every
// decision, key expiry twice the window. Each decision is one Lua script, so check and count are atomic across replicas.
package ratelimit

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Decision is the outcome of one limiter check.
type Decision struct {
	Allowed bool
	Limit   int
	// Remaining is the budget left in the window after this decision.
	Remaining int
	// RetryAfter is, when denied, how long until the oldest counted entry leaves the window, at least 1 s; 0 when allowed.
	// It is exact to the microsecond: round it up for a Retry-After header.
	RetryAfter time.Duration
	// Reset is how long until the oldest counted entry leaves the window (when Remaining next grows); 0 if nothing is counted.
	Reset time.Duration
}

// SlidingWindow counts requests per key. It is safe for concurrent use; concurrent calls share Redis round trips.
type SlidingWindow struct {
	batch *batcher
}

// NewSlidingWindow returns a limiter over rdb. It needs no Close: batches are sent by goroutines that exit when idle.
func NewSlidingWindow(rdb redis.UniversalClient) *SlidingWindow {
	return &SlidingWindow{batch: newBatcher(rdb)}
}

// TokenKey is Dify's per-token bucket, so Dify and authgate share one budget per token.
func TokenKey(tokenHash string) string { return "rl:token_id:token:" + tokenHash }

// Allow admits and counts one request if fewer than limit are counted in the window; a denied request is not counted.
// A Redis failure is returned as an error: the caller decides between failing open and refusing. A limit of 0 or less
// denies everything, so a caller whose setting says 0 = disabled must skip the call.
func (s *SlidingWindow) Allow(ctx context.Context, key string, limit int, window time.Duration) (Decision, error) {
	return s.batch.do(ctx, key, modeAllow, limit, window)
}

// Exceeded reports, without counting anything, whether limit events are already counted in the window (Allowed false).
// With Add it guards budgets of failures: check before the work, Add only when the work failed.
func (s *SlidingWindow) Exceeded(ctx context.Context, key string, limit int, window time.Duration) (Decision, error) {
	return s.batch.do(ctx, key, modeCheck, limit, window)
}

// Add counts one event unconditionally.
func (s *SlidingWindow) Add(ctx context.Context, key string, window time.Duration) error {
	_, err := s.batch.do(ctx, key, modeAdd, 0, window)
	return err
}

// windowSeconds is the window in whole seconds, as Dify scores it; anything shorter than a second counts as one.
func windowSeconds(window time.Duration) int64 {
	s := int64((window + time.Second - 1) / time.Second)
	return max(s, 1)
}
