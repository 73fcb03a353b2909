package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
)

// commandCounter counts the commands a client sends to Redis, pipelined or not: the proof that a decision made none.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func counted(t *testing.T, rdb *redis.Client) *commandCounter {
	t.Helper()
	c := &commandCounter{}
	rdb.AddHook(c)
	return c
}

func newLimiter(t *testing.T, rdb redis.UniversalClient, o Options) *SlidingWindow {
	t.Helper()
	s, err := New(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// A token pushed to its limit is refused from memory: no command reaches Redis, the count stays at the limit, and the
// Retry-After counts down to the moment the oldest entry leaves the window.
func TestKnownDenialMakesNoRedisCall(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	cmds := counted(t, rdb)
	rl := newLimiter(t, rdb, Options{})
	key := tokenKey("over")
	for i := range 3 {
		d, err := rl.Allow(ctx, key, 3, time.Minute)
		if err != nil || !d.Allowed || d.Local {
			t.Fatalf("request %d: %+v, %v; want admitted by Redis", i+1, d, err)
		}
	}
	before := cmds.n.Load()
	for i := range 100 {
		d, err := rl.Allow(ctx, key, 3, time.Minute)
		if err != nil || d.Allowed || !d.Local || d.Remaining != 0 {
			t.Fatalf("request %d over the limit: %+v, %v; want denied from memory", i+4, d, err)
		}
		if d.RetryAfter < 58*time.Second || d.RetryAfter > time.Minute {
			t.Fatalf("Retry-After %v, want about a minute (the entries were just added)", d.RetryAfter)
		}
	}
	if n := cmds.n.Load() - before; n != 0 {
		t.Fatalf("%d commands reached Redis for 100 known denials, want 0", n)
	}
	if st := rl.Stats(); st.LocalDenials != 100 || st.RedisDecisions != 3 {
		t.Fatalf("stats %+v, want 100 local denials and 3 Redis decisions", st)
	}
	if n := rdb.ZCard(ctx, key).Val(); n != 3 {
		t.Fatalf("bucket holds %d entries, want 3", n)
	}
	// The memory is per bucket and per limit: a higher limit asks Redis again.
	if d, err := rl.Allow(ctx, key, 4, time.Minute); err != nil || !d.Allowed || d.Local {
		t.Fatalf("with limit 4: %+v, %v; want admitted by Redis", d, err)
	}
}

// With an injected clock the known denial ends exactly at the deadline the script gave: one tick before, memory answers;
// at it, Redis is asked.
func TestKnownDenialEndsAtTheDeadline(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	cmds := counted(t, rdb)
	var mu sync.Mutex
	clock := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	rl := newLimiter(t, rdb, Options{Now: now})
	redisNow := rdb.Time(ctx).Val().Unix()
	rdb.ZAdd(ctx, "k", redis.Z{Score: float64(redisNow - 30), Member: "dify-1"}) // counted 30 s ago

	start := now()
	d, err := rl.Allow(ctx, "k", 1, time.Minute)
	if err != nil || d.Allowed || d.Local {
		t.Fatalf("%+v, %v; want denied by Redis", d, err)
	}
	deadline := start.Add(d.Reset)
	if d.Reset < 28*time.Second || d.Reset > 31*time.Second {
		t.Fatalf("Reset %v, want about 30 s", d.Reset)
	}
	set(deadline.Add(-time.Millisecond))
	before := cmds.n.Load()
	d, err = rl.Allow(ctx, "k", 1, time.Minute)
	if err != nil || d.Allowed || !d.Local || d.Reset != time.Millisecond || d.RetryAfter != time.Second {
		t.Fatalf("1 ms before the deadline: %+v, %v; want denied from memory, Reset 1ms, Retry-After 1s", d, err)
	}
	if n := cmds.n.Load() - before; n != 0 {
		t.Fatalf("%d commands before the deadline", n)
	}
	set(deadline)
	d, err = rl.Allow(ctx, "k", 1, time.Minute)
	if err != nil || d.Local {
		t.Fatalf("at the deadline: %+v, %v; want Redis asked", d, err)
	}
	if n := cmds.n.Load() - before; n == 0 {
		t.Fatal("no command at the deadline")
	}
}

// On the real clock: Dify's own entries fill the bucket; every request before the oldest can have left the window is
// denied from memory, and the first one after it has certainly left is admitted by Redis.
func TestKnownDenialLastsUntilTheOldestEntryAgesOut(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	cmds := counted(t, rdb)
	rl := newLimiter(t, rdb, Options{})
	key := tokenKey("aging")
	redisNow := rdb.Time(ctx).Val().Unix()
	// As Dify's RateLimiter writes them (ZADD key {now: now}; EXPIRE key 2*window): two leave within about 2 s.
	rdb.ZAdd(ctx, key, redis.Z{Score: float64(redisNow - 58), Member: strconv.FormatInt(redisNow-58, 10)},
		redis.Z{Score: float64(redisNow - 58), Member: "dify-second"},
		redis.Z{Score: float64(redisNow - 10), Member: strconv.FormatInt(redisNow-10, 10)})
	rdb.Expire(ctx, key, 2*time.Minute)

	t0 := time.Now()
	d, err := rl.Allow(ctx, key, 3, time.Minute)
	t1 := time.Now()
	if err != nil || d.Allowed {
		t.Fatalf("%+v, %v; want denied", d, err)
	}
	// The oldest entries leave at some instant in [t0+Reset, t1+Reset]: Redis ran the script between t0 and t1.
	earliest, latest := t0.Add(d.Reset), t1.Add(d.Reset)
	var local, redisAfter int
	testenv.Eventually(t, 5*time.Second, "admitted once the oldest entries left the window", func() bool {
		before := cmds.n.Load()
		ts := time.Now()
		d, err := rl.Allow(ctx, key, 3, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		askedRedis := cmds.n.Load() > before
		switch {
		case ts.Before(earliest):
			if d.Allowed || askedRedis {
				t.Fatalf("%v before the oldest entry could leave: %+v, Redis asked %v; want denied from memory",
					earliest.Sub(ts), d, askedRedis)
			}
			if want := earliest.Sub(ts); d.Reset < want-time.Millisecond || d.Reset > want+t1.Sub(t0)+time.Millisecond {
				t.Fatalf("Reset %v, want about %v", d.Reset, want)
			}
			local++
		case ts.After(latest):
			if !d.Allowed || !askedRedis {
				t.Fatalf("%v after the oldest entry left: %+v, Redis asked %v; want admitted by Redis", ts.Sub(latest), d,
					askedRedis)
			}
			redisAfter++
		}
		return d.Allowed
	})
	if local == 0 || redisAfter != 1 {
		t.Fatalf("%d local denials, %d Redis admissions after the deadline; want some and exactly 1", local, redisAfter)
	}
	if n := rdb.ZCard(ctx, key).Val(); n != 2 {
		t.Fatalf("bucket holds %d entries, want 2 (Dify's recent one and the admitted request)", n)
	}
}

// The invalid-bearer budget's check is answered from memory too once the budget is spent.
func TestExceededIsRememberedToo(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	cmds := counted(t, rdb)
	rl := newLimiter(t, rdb, Options{})
	for range 2 {
		if err := rl.Add(ctx, "budget", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := rl.Exceeded(ctx, "budget", 2, time.Minute); err != nil || d.Allowed || d.Local {
		t.Fatalf("%+v, %v; want exceeded, by Redis", d, err)
	}
	before := cmds.n.Load()
	if d, err := rl.Exceeded(ctx, "budget", 2, time.Minute); err != nil || d.Allowed || !d.Local {
		t.Fatalf("%+v, %v; want exceeded, from memory", d, err)
	}
	if cmds.n.Load() != before {
		t.Fatal("a known exceeded budget reached Redis")
	}
}

// Two replicas: one denies from memory while the other's admissions keep counting in the shared bucket, and Dify's own
// check (ZREMRANGEBYSCORE, ZCARD) sees every admission.
func TestReplicasShareTheBucketWhileOneDeniesLocally(t *testing.T) {
	ctx := context.Background()
	url := testenv.RedisURL(t)
	ra, rb := testenv.RedisClient(t, url), testenv.RedisClient(t, url)
	a, b := newLimiter(t, ra, Options{}), newLimiter(t, rb, Options{})
	for range 5 {
		if d, err := a.Allow(ctx, "shared", 5, time.Minute); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	}
	if d, _ := a.Allow(ctx, "shared", 5, time.Minute); d.Allowed || !d.Local {
		t.Fatalf("a at the limit: %+v, want a local denial", d)
	}
	// b has a higher limit for the same bucket (a Dify with another setting, say): its admissions still count.
	for range 3 {
		if d, err := b.Allow(ctx, "shared", 8, time.Minute); err != nil || !d.Allowed || d.Local {
			t.Fatalf("b: %+v, %v; want admitted by Redis", d, err)
		}
	}
	if d, _ := a.Allow(ctx, "shared", 5, time.Minute); d.Allowed {
		t.Fatal("a admitted over the limit")
	}
	if n := difyAttempts(t, ra, "shared", 60); n != 8 {
		t.Fatalf("Dify's check counts %d, want 8", n)
	}
}

// difyAttempts is Dify's RateLimiter.is_rate_limited count: ZREMRANGEBYSCORE key -inf now-window; ZCARD key, on its own clock.
func difyAttempts(t *testing.T, rdb *redis.Client, key string, window int64) int64 {
	t.Helper()
	ctx := context.Background()
	rdb.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(time.Now().Unix()-window, 10))
	n, err := rdb.ZCard(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// difyIncrement is Dify's RateLimiter.increment_rate_limit at second now: ZADD key {now: now}; EXPIRE key 2*window.
func difyIncrement(t *testing.T, rdb *redis.Client, key string, now, window int64) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.ZAdd(ctx, key, redis.Z{Score: float64(now), Member: strconv.FormatInt(now, 10)}).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Expire(ctx, key, time.Duration(2*window)*time.Second)
}

func TestDifySeesAuthgatesHitsAndAuthgateSeesDifys(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	for _, m := range []Mode{Exact, Batched} {
		t.Run(string(m), func(t *testing.T) {
			key := tokenKey("dify-" + string(m))
			rl := newLimiter(t, rdb, Options{Mode: m, BatchInterval: 20 * time.Millisecond, Allowance: 2})
			for range 7 {
				if d, err := rl.Allow(ctx, key, 10, time.Minute); err != nil || !d.Allowed {
					t.Fatalf("%+v, %v", d, err)
				}
			}
			testenv.Eventually(t, 5*time.Second, "Dify's check counts authgate's 7 hits", func() bool {
				return difyAttempts(t, rdb, key, 60) == 7
			})
			if ttl := rdb.TTL(ctx, key).Val(); ttl <= 110*time.Second || ttl > 120*time.Second {
				t.Fatalf("key TTL %v, want twice the window", ttl)
			}
			for _, z := range rdb.ZRangeWithScores(ctx, key, 0, -1).Val() {
				if z.Score != float64(int64(z.Score)) {
					t.Fatalf("entry %v not scored in whole seconds", z)
				}
			}
			// Dify admits three on its own, in three different seconds (its member is the second, so two in one second
			// would collapse): the budget of 10 is spent for authgate too.
			now := time.Now().Unix()
			for i := range int64(3) {
				if difyAttempts(t, rdb, key, 60) >= 10 {
					t.Fatal("Dify would refuse")
				}
				difyIncrement(t, rdb, key, now-2+i, 60)
			}
			admitted := 0
			for {
				d, err := rl.Allow(ctx, key, 10, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if !d.Allowed {
					break
				}
				admitted++
				if admitted > 10 {
					t.Fatal("never denied")
				}
			}
			// Exact: none. Batched: the view predates Dify's hits, so up to the allowance (2) more, and no further.
			if want := map[Mode]int{Exact: 0, Batched: 2}[m]; admitted > want {
				t.Fatalf("%d admitted after Dify's hits filled the bucket, want at most %d", admitted, want)
			}
			if difyAttempts(t, rdb, key, 60) < 10 {
				t.Fatal("Dify's check does not see the bucket full")
			}
		})
	}
}

// With CallTimeout a caller may pass a context without a deadline: its call still ends at the timeout, and a caller behind
// it is not held up.
func TestCallTimeoutBoundsEachCall(t *testing.T) {
	srv := testenv.StartRedisServer(t) // private: CLIENT PAUSE stops the whole server
	rdb := srv.Client()
	rl := newLimiter(t, rdb, Options{CallTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	if _, err := rl.Allow(ctx, "k", 5, time.Minute); err != nil { // script loaded, connection warm
		t.Fatal(err)
	}
	if err := rdb.Do(ctx, "CLIENT", "PAUSE", 2000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := rl.Allow(ctx, "k", 5, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("during a 2 s pause: %v, want the call's own deadline (100 ms)", err)
	}
	if !rl.BoundsCalls() {
		t.Fatal("BoundsCalls false with a CallTimeout")
	}
}
