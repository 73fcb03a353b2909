package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

func TestAllowDeniesTheRequestOverTheLimit(t *testing.T) {
	ctx := context.Background()
	rl := NewSlidingWindow(testenv.Redis(t))
	key := tokenKey("abc")
	for i := range 60 {
		d, err := rl.Allow(ctx, key, 60, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed || d.Limit != 60 || d.Remaining != 59-i || d.RetryAfter != 0 {
			t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, d, 59-i)
		}
		if d.Reset <= 0 || d.Reset > time.Minute {
			t.Fatalf("request %d: reset %v outside (0, 60s]", i+1, d.Reset)
		}
	}
	d, err := rl.Allow(ctx, key, 60, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Remaining != 0 {
		t.Fatalf("61st request: %+v, want denied", d)
	}
	if d.RetryAfter <= 0 || d.RetryAfter > time.Minute || d.RetryAfter < time.Second {
		t.Fatalf("61st request: RetryAfter %v outside [1s, 60s]", d.RetryAfter)
	}
}

func TestDeniedRequestsAreNotCounted(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := NewSlidingWindow(rdb)
	for range 3 {
		if _, err := rl.Allow(ctx, "k", 3, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		d, err := rl.Allow(ctx, "k", 3, time.Minute)
		if err != nil || d.Allowed {
			t.Fatalf("over the limit: %+v, %v", d, err)
		}
	}
	if n := rdb.ZCard(ctx, "k").Val(); n != 3 {
		t.Fatalf("bucket holds %d entries, want 3 (denied requests counted)", n)
	}
	// A higher limit sees exactly the admitted requests.
	d, err := rl.Allow(ctx, "k", 5, time.Minute)
	if err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("with limit 5: %+v, %v, want allowed with 1 remaining", d, err)
	}
}

func TestBucketIsDifysSortedSet(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := NewSlidingWindow(rdb)
	key := tokenKey("h")
	if key != "rl:token_id:token:h" {
		t.Fatalf("TokenKey = %q", key)
	}
	if _, err := rl.Allow(ctx, key, 60, time.Minute); err != nil {
		t.Fatal(err)
	}
	ttl := rdb.TTL(ctx, key).Val()
	if ttl <= 110*time.Second || ttl > 120*time.Second {
		t.Fatalf("key TTL %v, want twice the window (120s)", ttl)
	}
	entries := rdb.ZRangeWithScores(ctx, key, 0, -1).Val()
	now := rdb.Time(ctx).Val()
	if len(entries) != 1 || entries[0].Score != float64(int64(entries[0].Score)) {
		t.Fatalf("entries %+v, want one scored in whole seconds", entries)
	}
	if d := now.Unix() - int64(entries[0].Score); d < 0 || d > 5 {
		t.Fatalf("score %v is not Redis TIME (%d)", entries[0].Score, now.Unix())
	}
	// An entry Dify wrote a window ago is outside the window and is dropped by the next decision.
	old := float64(now.Unix() - 60)
	rdb.ZAdd(ctx, key, redisZ(old, "dify"))
	d, err := rl.Allow(ctx, key, 2, time.Minute)
	if err != nil || !d.Allowed {
		t.Fatalf("old entry still counted: %+v, %v", d, err)
	}
	if rdb.ZScore(ctx, key, "dify").Err() == nil {
		t.Fatal("entry older than the window was not removed")
	}
}

func TestRetryAfterFollowsTheOldestEntry(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := NewSlidingWindow(rdb)
	now := rdb.Time(ctx).Val().Unix()
	// Counted 50 s ago (as Dify would have): it leaves the window in about 10 s.
	rdb.ZAdd(ctx, "k", redisZ(float64(now-50), "old"))
	d, err := rl.Allow(ctx, "k", 1, time.Minute)
	if err != nil || d.Allowed {
		t.Fatalf("%+v, %v: want denied", d, err)
	}
	if d.RetryAfter < 5*time.Second || d.RetryAfter > 11*time.Second {
		t.Fatalf("RetryAfter %v, want about 10s", d.RetryAfter)
	}
}

func TestReplicasShareTheBudget(t *testing.T) {
	ctx := context.Background()
	url := testenv.RedisURL(t)
	a, b := NewSlidingWindow(testenv.RedisClient(t, url)), NewSlidingWindow(testenv.RedisClient(t, url))
	allowed := 0
	for i := range 20 {
		rl := a
		if i%2 == 1 {
			rl = b
		}
		d, err := rl.Allow(ctx, "shared", 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("two replicas admitted %d, want 10 in total", allowed)
	}
}

func TestConcurrentCallersAreCountedExactly(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := NewSlidingWindow(rdb)
	var allowed, denied atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			d, err := rl.Allow(ctx, "burst", 100, time.Minute)
			if err != nil {
				errs <- err
				return
			}
			if d.Allowed {
				allowed.Add(1)
			} else {
				denied.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if allowed.Load() != 100 || denied.Load() != 100 {
		t.Fatalf("admitted %d, denied %d; want 100 and 100", allowed.Load(), denied.Load())
	}
	if n := rdb.ZCard(ctx, "burst").Val(); n != 100 {
		t.Fatalf("bucket holds %d entries, want 100", n)
	}
}

func TestExceededAndAdd(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := NewSlidingWindow(rdb)
	for i := range 3 {
		d, err := rl.Exceeded(ctx, "fail", 3, time.Minute)
		if err != nil || !d.Allowed || d.Remaining != 3-i {
			t.Fatalf("after %d failures: %+v, %v", i, d, err)
		}
		if err := rl.Add(ctx, "fail", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	d, err := rl.Exceeded(ctx, "fail", 3, time.Minute)
	if err != nil || d.Allowed || d.RetryAfter < time.Second {
		t.Fatalf("budget spent: %+v, %v, want not allowed with RetryAfter", d, err)
	}
	if n := rdb.ZCard(ctx, "fail").Val(); n != 3 {
		t.Fatalf("Exceeded counted: %d entries, want 3", n)
	}
	// Add counts even past the limit.
	if err := rl.Add(ctx, "fail", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, "fail").Val(); n != 4 {
		t.Fatalf("%d entries after Add past the limit, want 4", n)
	}
}

func TestScriptIsReloadedAfterScriptFlush(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	rl := NewSlidingWindow(rdb)
	if _, err := rl.Allow(ctx, "k", 5, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	d, err := rl.Allow(ctx, "k", 5, time.Minute)
	if err != nil || !d.Allowed || d.Remaining != 3 {
		t.Fatalf("after SCRIPT FLUSH: %+v, %v, want allowed with 3 remaining (counted once)", d, err)
	}
}

func TestRedisDownIsAnError(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	rl := NewSlidingWindow(srv.Client())
	ctx := context.Background()
	if _, err := rl.Allow(ctx, "k", 5, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// A hang would end at this deadline; a prompt connection error must come first.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := rl.Allow(ctx, "k", 5, time.Minute)
	if err == nil {
		t.Fatal("Allow with Redis down returned no error")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Allow with Redis down hung until the deadline: %v", err)
	}
}

func TestCallerContextIsRespected(t *testing.T) {
	rl := NewSlidingWindow(testenv.Redis(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := rl.Allow(ctx, "k", 5, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v, want context.Canceled", err)
	}
	// Others are not affected by a caller that gave up.
	d, err := rl.Allow(context.Background(), "k", 5, time.Minute)
	if err != nil || !d.Allowed || d.Remaining != 4 {
		t.Fatalf("%+v, %v: want allowed with 4 remaining", d, err)
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	rl := NewSlidingWindow(testenv.Redis(b))
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(32) // many concurrent Checks per core, as under load
	b.RunParallel(func(pb *testing.PB) {
		key := tokenKey(string(rune('a' + n.Add(1)%26)))
		for pb.Next() {
			if _, err := rl.Allow(ctx, key, 1<<30, time.Minute); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestACallerThatGivesUpDoesNotHoldUpOthers(t *testing.T) {
	srv := testenv.StartRedisServer(t) // private: CLIENT PAUSE stops the whole server
	rdb := srv.Client()
	rl := NewSlidingWindow(rdb)
	ctx := context.Background()
	if _, err := rl.Allow(ctx, "k", 5, time.Minute); err != nil { // script loaded, connection warm
		t.Fatal(err)
	}
	if err := rdb.Do(ctx, "CLIENT", "PAUSE", 500, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 2)
	var patientErr error
	var patient Decision
	var wg sync.WaitGroup
	wg.Go(func() {
		patient, patientErr = rl.Allow(ctx, "k", 5, time.Minute)
		order <- "patient"
	})
	impatient, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := rl.Allow(impatient, "k", 5, time.Minute)
	order <- "impatient"
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v, want its own deadline", err)
	}
	wg.Wait()
	if first := <-order; first != "impatient" {
		t.Fatal("the impatient caller waited for the paused round trip")
	}
	if patientErr != nil || !patient.Allowed {
		t.Fatalf("patient caller: %+v, %v; its round trip must complete after the pause", patient, patientErr)
	}
}
