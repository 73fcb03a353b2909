package ratelimit

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
)

// A batched limiter admits without Redis while the bucket is far from its limit, and writes its hits to Dify's sorted set
// within an interval: one entry per hit, scored in whole seconds of Redis's clock, with Dify's expiry.
func TestBatchedAdmitsLocallyAndWritesEachInterval(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := newLimiter(t, rdb, Options{Mode: Batched, BatchInterval: 50 * time.Millisecond, Allowance: 100})
	key := tokenKey("batched")
	for i := range 51 {
		d, err := rl.Allow(ctx, key, 1000, time.Minute)
		if err != nil || !d.Allowed || !d.Local {
			t.Fatalf("request %d: %+v, %v; want admitted locally", i+1, d, err)
		}
		if d.Remaining > 999-i || d.Remaining < 999-i-50 || d.Reset <= 0 || d.Reset > time.Minute {
			t.Fatalf("request %d: remaining %d, reset %v", i+1, d.Remaining, d.Reset)
		}
	}
	testenv.Eventually(t, 5*time.Second, "51 hits in the bucket", func() bool { return rdb.ZCard(ctx, key).Val() == 51 })
	st := rl.Stats()
	if st.LocalAdmissions != 51 || st.RedisDecisions != 0 || st.FlushedHits != 51 || st.Flushes == 0 {
		t.Fatalf("stats %+v", st)
	}
	redisNow := rdb.Time(ctx).Val().Unix()
	members := map[string]bool{}
	for _, z := range rdb.ZRangeWithScores(ctx, key, 0, -1).Val() {
		if z.Score != float64(int64(z.Score)) || redisNow-int64(z.Score) > 5 || int64(z.Score) > redisNow {
			t.Fatalf("entry %v: want Redis's TIME in whole seconds (%d)", z, redisNow)
		}
		members[z.Member.(string)] = true
	}
	if len(members) != 51 {
		t.Fatalf("%d distinct members, want 51", len(members))
	}
	if ttl := rdb.TTL(ctx, key).Val(); ttl <= 110*time.Second || ttl > 120*time.Second {
		t.Fatalf("key TTL %v, want twice the window", ttl)
	}
}

// One replica alone admits at most limit + allowance (its script admissions in flight are not in its view yet, so local
// admissions may run ahead of them by up to the hits it holds), and writes every hit it admitted.
func TestBatchedAloneStaysWithinTheBound(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	const limit, allowance = 20, 5
	for round := range 5 {
		key := tokenKey("alone-" + strconv.Itoa(round))
		rl := newLimiter(t, rdb, Options{Mode: Batched, BatchInterval: time.Hour, Allowance: allowance})
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				for range 10 {
					d, err := rl.Allow(ctx, key, limit, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		n := admitted.Load()
		if n < limit || n > limit+allowance {
			t.Fatalf("admitted %d of 100, want between the limit (%d) and limit + allowance (%d)", n, limit, limit+allowance)
		}
		if st := rl.Stats(); st.LocalAdmissions == 0 {
			t.Fatalf("stats %+v: nothing admitted locally", st)
		}
		if err := rl.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if c := rdb.ZCard(ctx, key).Val(); c != n {
			t.Fatalf("bucket holds %d, want every admission (%d)", c, n)
		}
	}
}

// Three replicas hammering one bucket admit at most limit + replicas × allowance, and every admission is written.
func TestBatchedOverAdmissionIsBounded(t *testing.T) {
	ctx := context.Background()
	url := testenv.RedisURL(t)
	const limit, allowance, replicas = 60, 6, 3
	for round := range 3 {
		key := tokenKey("hammer-" + string(rune('a'+round)))
		var limiters []*SlidingWindow
		for range replicas {
			limiters = append(limiters, newLimiter(t, testenv.RedisClient(t, url),
				Options{Mode: Batched, BatchInterval: 20 * time.Millisecond, Allowance: allowance}))
		}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for _, rl := range limiters {
			for range 8 {
				wg.Go(func() {
					for range 40 {
						d, err := rl.Allow(ctx, key, limit, time.Minute)
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							admitted.Add(1)
						}
					}
				})
			}
		}
		wg.Wait()
		n := admitted.Load()
		t.Logf("round %d: %d admitted of %d (limit %d, bound %d)", round+1, n, replicas*8*40, limit, limit+replicas*allowance)
		if n < limit || n > limit+replicas*allowance {
			t.Fatalf("admitted %d, want between the limit (%d) and limit + replicas·allowance (%d)", n, limit,
				limit+replicas*allowance)
		}
		for _, rl := range limiters {
			if err := rl.Close(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if c := testenv.RedisClient(t, url).ZCard(ctx, key).Val(); c != n {
			t.Fatalf("bucket holds %d, want every admission (%d)", c, n)
		}
	}
}

// The bound is reached: three replicas each hold a whole allowance admitted on views that left room, while Dify fills the
// bucket to the limit; what they hold is written anyway (it was admitted), and then every replica refuses.
func TestBatchedOverAdmissionReachesItsBound(t *testing.T) {
	ctx := context.Background()
	url := testenv.RedisURL(t)
	dify := testenv.RedisClient(t, url)
	key := tokenKey("worst")
	const limit, allowance = 60, 6
	var limiters []*SlidingWindow
	for range 3 {
		limiters = append(limiters, newLimiter(t, testenv.RedisClient(t, url), Options{Mode: Batched, BatchInterval: time.Hour, Allowance: allowance}))
	}
	for _, rl := range limiters { // the bucket is empty: each admits a whole allowance locally
		for range allowance {
			if d, err := rl.Allow(ctx, key, limit, time.Minute); err != nil || !d.Allowed || !d.Local {
				t.Fatalf("%+v, %v; want admitted locally", d, err)
			}
		}
	}
	// Dify admits up to the limit meanwhile, all in the current second (so no flush trims any of them as out of the window
	// when the test crosses a second boundary).
	now := dify.Time(ctx).Val().Unix()
	for i := range limit {
		if err := dify.ZAdd(ctx, key, redis.Z{Score: float64(now), Member: "dify-" + strconv.Itoa(i)}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n := difyAttempts(t, dify, key, 60); n != limit {
		t.Fatalf("Dify's check counts %d, want the limit %d", n, limit)
	}
	for _, rl := range limiters {
		if err := rl.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if total := dify.ZCard(ctx, key).Val(); total != limit+3*allowance {
		t.Fatalf("bucket holds %d, want limit + replicas·allowance = %d", total, limit+3*allowance)
	}
	for _, rl := range limiters {
		if d, err := rl.Allow(ctx, key, limit, time.Minute); err != nil || d.Allowed {
			t.Fatalf("%+v, %v; want denied", d, err)
		}
	}
}

// Close writes the hits held, and afterwards every decision goes to the script.
func TestBatchedCloseWritesHeldHits(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := newLimiter(t, rdb, Options{Mode: Batched, BatchInterval: time.Hour, Allowance: 50})
	for range 11 {
		if d, err := rl.Allow(ctx, "closing", 1000, time.Minute); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	}
	if n := rdb.ZCard(ctx, "closing").Val(); n != 0 {
		t.Fatalf("before Close the bucket holds %d, want nothing yet (every request admitted locally)", n)
	}
	if err := rl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, "closing").Val(); n != 11 {
		t.Fatalf("after Close the bucket holds %d, want 11", n)
	}
	if d, err := rl.Allow(ctx, "closing", 1000, time.Minute); err != nil || !d.Allowed || d.Local {
		t.Fatalf("after Close: %+v, %v; want decided by Redis", d, err)
	}
}

// With Redis down a batched limiter admits at most its allowance locally, then fails like the exact path (the caller
// applies RATE_LIMIT_FAIL_OPEN); the hits it held are written once Redis is back.
func TestBatchedRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	rdb := srv.Client()
	// The limiter's client is tuned as the services' (internal/redisclient): no retries, every call bounded by its
	// context. go-redis's defaults retry a failed call and may send it once the server is back, after its caller was told
	// it failed: a hit counted for a request that got an error.
	limiterRDB := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = limiterRDB.Close() })
	rl := newLimiter(t, limiterRDB, Options{Mode: Batched, BatchInterval: 20 * time.Millisecond, Allowance: 5})
	if d, err := rl.Allow(ctx, "down", 100, time.Minute); err != nil || !d.Allowed {
		t.Fatalf("%+v, %v", d, err)
	}
	testenv.Eventually(t, 5*time.Second, "the first hit written", func() bool { return rdb.ZCard(ctx, "down").Val() == 1 })
	srv.Stop()
	local := 0
	for range 20 {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d, err := rl.Allow(cctx, "down", 100, time.Minute)
		cancel()
		if err != nil {
			break
		}
		if !d.Allowed || !d.Local {
			t.Fatalf("%+v: want a local admission or an error with Redis down", d)
		}
		local++
	}
	if local == 0 || local > 5 {
		t.Fatalf("%d admitted with Redis down, want 1..5 (the allowance)", local)
	}
	testenv.Eventually(t, 5*time.Second, "a failed write counted", func() bool { return rl.Stats().FlushErrors > 0 })
	srv.Start() // empty: the server keeps nothing across a restart
	testenv.Eventually(t, 10*time.Second, "held hits written after the outage", func() bool {
		return rdb.ZCard(ctx, "down").Val() == int64(local)
	})
}

// A write to a bucket whose oldest entry is known to be inside the window neither removes entries nor reads the oldest:
// there would be nothing to remove and the oldest is unchanged.
func TestBatchedWritesOnlyWhatTheViewNeeds(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t) // private: commandstats counts only this test's commands
	rdb := srv.Client()
	rl := newLimiter(t, rdb, Options{Mode: Batched, BatchInterval: 20 * time.Millisecond, Allowance: 100})
	for range 3 {
		for range 10 {
			if d, err := rl.Allow(ctx, "trim", 1000, time.Minute); err != nil || !d.Allowed {
				t.Fatalf("%+v, %v", d, err)
			}
		}
		want := rl.Stats().LocalAdmissions
		testenv.Eventually(t, 5*time.Second, "hits written", func() bool { return rdb.ZCard(ctx, "trim").Val() == want })
	}
	info := rdb.Info(ctx, "commandstats").Val()
	calls := func(cmd string) string {
		for line := range strings.SplitSeq(info, "\n") {
			if strings.HasPrefix(line, "cmdstat_"+cmd+":") {
				calls, _, _ := strings.Cut(strings.TrimPrefix(line, "cmdstat_"+cmd+":calls="), ",")
				return calls
			}
		}
		return "0"
	}
	// The first write did both (it knew nothing of the bucket); the later ones neither.
	if z, r := calls("zrange"), calls("zremrangebyscore"); z != "1" || r != "1" {
		t.Fatalf("ZRANGE %s, ZREMRANGEBYSCORE %s calls; want 1 and 1", z, r)
	}
	if st := rl.Stats(); st.Flushes < 3 || st.LocalAdmissions != 30 || st.RedisDecisions != 0 {
		t.Fatalf("stats %+v", st)
	}
}
