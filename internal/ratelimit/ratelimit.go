// Package ratelimit is Dify's sliding-window limiter over Redis sorted sets, shared by every replica and by Dify itself:
// one sorted set per bucket, scored by whole seconds of Redis's own clock, entries older than the window dropped when a
// decision meets them, key expiry twice the window. Each decision Redis makes is one Lua script, so check and count are
// atomic across replicas.
//
// Two ways keep most decisions off Redis (docs/architecture.md, "Rate limiting"):
//   - known denials: a bucket seen at or over its limit stays there until its oldest counted entry leaves the window
//     (entries leave only by age, and denied requests are not counted), so until then a replica denies from memory, exactly
//     as Redis would;
//   - batched mode (Options.Mode = Batched, for Allow): a replica admits locally against its last view of the bucket plus
//     its own hits not yet written, writes its hits to the bucket every interval, and goes back to the script when the
//     bucket nears its limit. Over-admission is bounded by replicas × the per-replica allowance per window.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
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
	// Local is true when the decision was made from this process's memory, without a Redis call.
	Local bool
}

// Mode selects how Allow decides.
type Mode string

const (
	// Exact decides every admission with the script (known denials from memory).
	Exact Mode = "exact"
	// Batched admits locally while the bucket is far from its limit and writes hits every BatchInterval.
	Batched Mode = "batched"
)

// ParseMode reads RATE_LIMIT_MODE.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case Exact, Batched:
		return Mode(s), nil
	}
	return "", fmt.Errorf("unknown rate limit mode %q (want exact or batched)", s)
}

// Defaults and bounds of the batched mode.
const (
	DefaultBatchInterval = 100 * time.Millisecond
	// MaxAllowance bounds the hits one replica holds for one bucket, so the script that writes them stays small.
	MaxAllowance = 1000
)

// DefaultAllowance is the per-replica allowance when none is configured: one interval's worth of the limit (what a client
// at exactly its limit sends in one interval), rounded up, at least 1 and at most MaxAllowance. With it a busy token costs
// about one script per interval per replica, and the worst case over-admits by replicas × one interval's worth.
func DefaultAllowance(limit int, interval, window time.Duration) int {
	if window <= 0 {
		return 1
	}
	a := (int64(limit)*int64(interval) + int64(window) - 1) / int64(window)
	return int(min(max(a, 1), MaxAllowance))
}

// Options configure New.
type Options struct {
	Mode Mode // "" is Exact
	// BatchInterval is how often a batched limiter writes its hits (default 100 ms).
	BatchInterval time.Duration
	// Allowance is, in batched mode, how many hits one replica may admit for one bucket without writing them, and the
	// headroom below the limit under which it stops admitting locally. 0: DefaultAllowance of each call's limit.
	Allowance int
	// CallTimeout bounds each Redis call when the caller's context allows longer (0: the context alone). With it a caller
	// can pass its whole request's context and build no deadline per call.
	CallTimeout time.Duration
	// Now is the local clock (default time.Now); Redis's TIME stays the clock of every count.
	Now func() time.Time
	// Meter and MetricPrefix name the counter of Redis round trips MetricPrefix + "_ratelimit_round_trips" (e.g.
	// authgate_extauthz_ratelimit_round_trips_total); no Meter: no metric.
	Meter        metric.Meter
	MetricPrefix string
}

// SlidingWindow counts requests per key. It is safe for concurrent use; concurrent calls share Redis round trips.
type SlidingWindow struct {
	batch   *batcher
	now     func() time.Time
	denials *denials // nil: every decision goes to Redis
	local   *batched // nil unless Mode is Batched
	bounded bool     // Options.CallTimeout is set
	stats   counters
	trips   metric.Int64Counter
}

// Round-trip kinds of the round-trips metric.
var (
	tripScript = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "script")))
	tripWrite  = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "write")))
)

// BoundsCalls reports whether the limiter bounds each Redis call itself (Options.CallTimeout).
func (s *SlidingWindow) BoundsCalls() bool { return s.bounded }

// NewSlidingWindow returns an exact limiter over rdb that asks Redis for every decision. It needs no Close: batches are
// sent by goroutines that exit when idle.
func NewSlidingWindow(rdb redis.UniversalClient) *SlidingWindow {
	s := &SlidingWindow{now: time.Now}
	s.trips, _ = noop.NewMeterProvider().Meter("ratelimit").Int64Counter("round_trips") // the noop meter never fails
	s.batch = newBatcher(rdb, 0, s.scriptSent)
	return s
}

// New returns a limiter over rdb that remembers known denials and, in batched mode, admits locally. Close writes what a
// batched limiter holds.
func New(rdb redis.UniversalClient, o Options) (*SlidingWindow, error) {
	if o.Mode == "" {
		o.Mode = Exact
	}
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return nil, err
	}
	if o.BatchInterval < 0 || o.CallTimeout < 0 || o.Allowance < 0 || o.Allowance > MaxAllowance {
		return nil, errors.New("ratelimit: negative batch interval or call timeout, or allowance outside 0..1000")
	}
	if o.BatchInterval == 0 {
		o.BatchInterval = DefaultBatchInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &SlidingWindow{now: o.Now, denials: newDenials(), bounded: o.CallTimeout > 0}
	meter, prefix := o.Meter, o.MetricPrefix
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("ratelimit")
	}
	if prefix == "" {
		prefix = "authgate"
	}
	var err error
	if s.trips, err = meter.Int64Counter(prefix+"_ratelimit_round_trips", metric.WithDescription("Redis round trips of "+
		"the per-token limiter, by kind: script (one run of the limiter's script for every decision that was waiting, "+
		"or, on a Cluster, a pipeline of one run per decision), write (batched mode: the TIME read and the pipelined "+
		"write of held hits).")); err != nil {
		return nil, fmt.Errorf("ratelimit: metrics: %w", err)
	}
	s.batch = newBatcher(rdb, o.CallTimeout, s.scriptSent)
	if o.Mode == Batched {
		s.local = newBatched(s, rdb, o)
	}
	return s, nil
}

// Allow admits and counts one request if fewer than limit are counted in the window; a denied request is not counted.
// A Redis failure is returned as an error: the caller decides between failing open and refusing. A limit of 0 or less
// denies everything, so a caller whose setting says 0 = disabled must skip the call.
func (s *SlidingWindow) Allow(ctx context.Context, key string, limit int, window time.Duration) (Decision, error) {
	if d, ok := s.AllowLocal(key, limit, window); ok {
		return d, nil
	}
	if s.local != nil {
		return s.local.allowExact(ctx, key, limit, window)
	}
	return s.do(ctx, key, modeAllow, limit, window, 0)
}

// AllowLocal is Allow when this process can decide without Redis: a known denial, or (batched mode) a local admission,
// which counts the request. ok is false when Redis must be asked; then nothing was counted.
func (s *SlidingWindow) AllowLocal(key string, limit int, window time.Duration) (d Decision, ok bool) {
	if s.denials == nil {
		return Decision{}, false
	}
	now, shard := s.now(), shardOf(key)
	if d, ok := s.knownDenial(key, shard, limit, now); ok {
		return d, true
	}
	if s.local != nil {
		return s.local.admit(key, shard, limit, window, now)
	}
	return Decision{}, false
}

// Exceeded reports, without counting anything, whether limit events are already counted in the window (Allowed false).
// With Add it guards budgets of failures: check before the work, Add only when the work failed.
func (s *SlidingWindow) Exceeded(ctx context.Context, key string, limit int, window time.Duration) (Decision, error) {
	if s.denials != nil {
		if d, ok := s.knownDenial(key, shardOf(key), limit, s.now()); ok {
			return d, nil
		}
	}
	return s.do(ctx, key, modeCheck, limit, window, 0)
}

// Add counts one event unconditionally.
func (s *SlidingWindow) Add(ctx context.Context, key string, window time.Duration) error {
	_, err := s.do(ctx, key, modeAdd, 0, window, 0)
	return err
}

// Close writes the hits a batched limiter admitted and has not written yet (up to ctx) and stops its writer; later calls
// go to Redis. It does nothing for an exact limiter.
func (s *SlidingWindow) Close(ctx context.Context) error {
	if s.local == nil {
		return nil
	}
	return s.local.close(ctx)
}

// Stats are counts of how decisions were made since the limiter started.
type Stats struct {
	// RedisDecisions are decisions made by the script for Allow, Exceeded and Add; ScriptRoundTrips the round trips that
	// carried them (a round trip carries every decision that was waiting, and a reload after NOSCRIPT is one more).
	RedisDecisions, ScriptRoundTrips int64
	// LocalDenials are denials answered from memory; LocalAdmissions are admissions made without Redis (batched mode).
	LocalDenials, LocalAdmissions int64
	// Flushes are the batched writes sent, FlushedHits the hits they carried, FlushErrors the writes that failed (their hits
	// are kept for the next one).
	Flushes, FlushedHits, FlushErrors int64
}

type counters struct {
	redisDecisions, scriptRoundTrips, localDenials, localAdmissions, flushes, flushedHits, flushErrors atomic.Int64
}

// Stats returns the counters.
func (s *SlidingWindow) Stats() Stats {
	c := &s.stats
	return Stats{RedisDecisions: c.redisDecisions.Load(), ScriptRoundTrips: c.scriptRoundTrips.Load(), LocalDenials: c.localDenials.Load(),
		LocalAdmissions: c.localAdmissions.Load(), Flushes: c.flushes.Load(), FlushedHits: c.flushedHits.Load(),
		FlushErrors: c.flushErrors.Load()}
}

// scriptSent counts round trips that ran the script.
func (s *SlidingWindow) scriptSent(n int) {
	s.stats.scriptRoundTrips.Add(int64(n))
	s.trips.Add(context.Background(), int64(n), tripScript)
}

// do runs the script for one decision (with pending hits of this replica to write first, batched mode) and remembers a
// bucket it finds at or over the limit.
func (s *SlidingWindow) do(ctx context.Context, key string, m mode, limit int, window time.Duration, pending int) (Decision, error) {
	r, err := s.batch.do(ctx, key, m, limit, windowSeconds(window), pending, s.now)
	if err != nil {
		return Decision{}, err
	}
	s.stats.redisDecisions.Add(1)
	if m != modeAdd {
		s.remember(key, r)
	}
	return r.decision(), nil
}

// remember keeps a bucket the reply shows at or over its limit: no request can be admitted before its oldest counted entry
// leaves the window, so until then the answer is known.
func (s *SlidingWindow) remember(key string, r reply) {
	if s.denials == nil || r.count < int64(r.limit) || r.oldest < 0 || r.limit <= 0 {
		return
	}
	until := r.sentAt.Add(reset(r.oldest, r.windowSec, r.nowSec, r.nowUsec))
	s.denials.put(key, shardOf(key), denial{until: until, count: r.count}, s.now())
}

// knownDenial answers from memory for a bucket known to be at or over limit until a time still ahead.
func (s *SlidingWindow) knownDenial(key string, shard int, limit int, now time.Time) (Decision, bool) {
	if limit <= 0 {
		return Decision{}, false
	}
	dn, ok := s.denials.get(key, shard, now)
	if !ok || dn.count < int64(limit) {
		return Decision{}, false
	}
	s.stats.localDenials.Add(1)
	left := dn.until.Sub(now)
	return Decision{Limit: limit, RetryAfter: max(left, time.Second), Reset: left, Local: true}, true
}

// windowSeconds is the window in whole seconds, as Dify scores it; anything shorter than a second counts as one.
func windowSeconds(window time.Duration) int64 {
	s := int64((window + time.Second - 1) / time.Second)
	return max(s, 1)
}
