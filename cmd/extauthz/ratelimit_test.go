package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// scriptCalls is how many limiter scripts the Redis server has run (INFO commandstats): a private server's count is exact.
func scriptCalls(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, cmd := range []string{"evalsha", "eval"} {
		if m := regexp.MustCompile(`cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			n += v
		}
	}
	return n
}

func rateDecisions(t *testing.T, s *server, source string) float64 {
	t.Helper()
	return metricValue(t, s, `authgate_extauthz_ratelimit_decisions_total\{[^}]*source="`+source+`"[^}]*\}`)
}

func retryAfter(t *testing.T, s *server, plain string) int {
	t.Helper()
	resp := s.check(t, "GET", "/openapi/v1/me", bearer(plain))
	expectDeny(t, resp, 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "*"})
	for _, h := range resp.GetDeniedResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "retry-after" {
			n, err := strconv.Atoi(h.GetHeader().GetValue())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Retry-After")
	return 0
}

// TestKnownDenialAcrossReplicas: a replica that knows a token is over its limit refuses it without running the limiter
// script, with the right Retry-After; once the oldest entries leave the window, another replica's admissions count in
// the shared bucket, and the first replica, asking Redis again, is refused because of them.
func TestKnownDenialAcrossReplicas(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	rdb := rs.Client()
	w := newWorld(t)
	w.redisURL = rs.URL()
	a, b := w.start(nil), w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	key := "rl:token_id:token:" + tokens.Hash(ada)
	ctx := context.Background()

	// Dify counted 59 requests about 54 s ago (one member per request, as a Dify without the one-per-second collapse would).
	now := rdb.Time(ctx).Val().Unix()
	var zs []redis.Z
	for i := range 59 {
		zs = append(zs, redis.Z{Score: float64(now - 54), Member: fmt.Sprintf("dify-%d", i)})
	}
	rdb.ZAdd(ctx, key, zs...)
	rdb.Expire(ctx, key, 2*time.Minute)

	resp := a.check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); rl["ratelimit-remaining"] != "0" {
		t.Fatalf("60th request: RateLimit headers %v, want 0 remaining", rl)
	}
	scripts, memory := scriptCalls(t, rdb), rateDecisions(t, a, "memory")
	// a's round trips ran the script on this private Redis, and only a's ran it so far.
	if trips := metricValue(t, a, `authgate_extauthz_ratelimit_round_trips_total\{[^}]*kind="script"[^}]*\}`); trips < 1 ||
		trips > float64(scripts) {
		t.Fatalf("%v script round trips counted by a; Redis ran the script %d times", trips, scripts)
	}
	start := time.Now()
	first := retryAfter(t, a, ada)
	for range 20 {
		if n := retryAfter(t, a, ada); n > first || n < 1 {
			t.Fatalf("Retry-After %d after %d", n, first)
		}
	}
	if elapsed := time.Since(start); elapsed < time.Duration(first-1)*time.Second { // the entries were still in the window
		if n := scriptCalls(t, rdb) - scripts; n != 0 {
			t.Fatalf("%d limiter scripts ran for 21 known denials, want 0", n)
		}
		if n := rateDecisions(t, a, "memory") - memory; n != 21 {
			t.Fatalf("%v decisions from memory, want 21", n)
		}
	}
	if first < 1 || first > 7 {
		t.Fatalf("Retry-After %d, want the seconds until Dify's entries leave the window (about 6)", first)
	}

	// b never saw the token over its limit: it is admitted as soon as Dify's entries have left, and fills the bucket.
	testenv.Eventually(t, 15*time.Second, "b admitted once the old entries left the window", func() bool {
		return b.check(t, "GET", "/openapi/v1/me", bearer(ada)).GetOkResponse() != nil
	})
	admitted := 1
	for b.check(t, "GET", "/openapi/v1/me", bearer(ada)).GetOkResponse() != nil {
		admitted++
		if admitted > 60 {
			t.Fatal("b admitted more than the limit")
		}
	}
	if admitted != 59 { // a's one request is still counted
		t.Fatalf("b admitted %d, want 59", admitted)
	}
	scripts = scriptCalls(t, rdb)
	retryAfter(t, a, ada)
	if scriptCalls(t, rdb) == scripts {
		t.Fatal("a's known denial outlived the oldest entry: it did not ask Redis again")
	}
	if n := rdb.ZCard(ctx, key).Val(); n != 60 {
		t.Fatalf("bucket holds %d, want 60", n)
	}
}

// TestBatchedReplicasOverAdmitWithinTheBound: three replicas in batched mode hammering one token admit at most
// limit + replicas × allowance in the window, and every admission reaches Dify's bucket.
func TestBatchedReplicasOverAdmitWithinTheBound(t *testing.T) {
	w := newWorld(t)
	const allowance, replicas = 6, 3
	vars := map[string]string{"RATE_LIMIT_MODE": "batched", "RATE_LIMIT_BATCH_INTERVAL": "50ms",
		"RATE_LIMIT_BATCH_ALLOWANCE": strconv.Itoa(allowance)}
	var servers []*server
	for range replicas {
		servers = append(servers, w.start(vars))
	}
	ada, _ := w.accountToken(accountActive, "ada@example.com")
	var allowed, limited atomic.Int64
	var wg sync.WaitGroup
	for _, s := range servers {
		for range 8 {
			wg.Go(func() {
				for range 25 {
					resp := s.check(t, "GET", "/openapi/v1/me", bearer(ada))
					switch {
					case resp.GetOkResponse() != nil:
						allowed.Add(1)
					case strings.Contains(resp.GetDeniedResponse().GetBody(), `"rate_limited"`):
						limited.Add(1)
					default:
						t.Errorf("unexpected deny: %s", resp.GetDeniedResponse().GetBody())
					}
				}
			})
		}
	}
	wg.Wait()
	n := allowed.Load()
	t.Logf("%d allowed, %d rate limited", n, limited.Load())
	if n < 60 || n > 60+replicas*allowance {
		t.Fatalf("%d allowed, want between the limit (60) and limit + replicas·allowance (%d)", n, 60+replicas*allowance)
	}
	rdb := w.redisClient()
	testenv.Eventually(t, 5*time.Second, "every admission written to the bucket", func() bool {
		return rdb.ZCard(context.Background(), "rl:token_id:token:"+tokens.Hash(ada)).Val() == n
	})
}

// TestBatchedModeOutageAndShutdown: in batched mode a Redis outage follows RATE_LIMIT_FAIL_OPEN as in exact mode, and a
// replica stopping gracefully writes the hits it admitted and had not written yet.
func TestBatchedModeOutageAndShutdown(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	w.redisURL = rs.URL()
	batched := map[string]string{"RATE_LIMIT_MODE": "batched", "RATE_LIMIT_BATCH_INTERVAL": "1m",
		"OPENAPI_RATE_LIMIT_PER_TOKEN": "1000", "RATE_LIMIT_BATCH_ALLOWANCE": "100"}
	open := w.start(batched)
	strict := w.start(with(batched, "RATE_LIMIT_FAIL_OPEN", "false"))
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	key := "rl:token_id:token:" + tokens.Hash(ada)
	rdb := rs.Client()
	ctx := context.Background()

	for i := range 10 {
		resp := open.check(t, "GET", "/openapi/v1/me", bearer(ada))
		expectAllow(t, resp, adaH)
		if rl := rateHeaders(resp); rl["ratelimit-limit"] != "1000" || rl["ratelimit-remaining"] != strconv.Itoa(999-i) {
			t.Fatalf("request %d: RateLimit headers %v", i+1, rl)
		}
	}
	if n := rdb.ZCard(ctx, key).Val(); n != 0 {
		t.Fatalf("bucket holds %d before any write, want 0 (every request admitted locally)", n)
	}
	if err := open.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, key).Val(); n != 10 {
		t.Fatalf("bucket holds %d after a graceful shutdown, want all 10", n)
	}

	open = w.start(batched)
	expectAllow(t, open.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
	expectAllow(t, strict.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
	rs.Stop()
	testenv.Eventually(t, 10*time.Second, "fail-closed replica refuses with 503", func() bool {
		return strings.Contains(strict.check(t, "GET", "/openapi/v1/me", bearer(ada)).GetDeniedResponse().GetBody(),
			`"auth_unavailable"`)
	})
	testenv.Eventually(t, 10*time.Second, "fail-open replica skips the limiter", func() bool {
		resp := open.check(t, "GET", "/openapi/v1/me", bearer(ada))
		return resp.GetOkResponse() != nil && len(rateHeaders(resp)) == 0
	})
	if !regexp.MustCompile(`authgate_extauthz_ratelimit_skipped_total\{[^}]*limit="token"[^}]*\} [1-9]`).MatchString(metricsText(t, open)) {
		t.Error("skipped limiter decisions not counted in /metrics")
	}
	rs.Start()
	for _, s := range []*server{open, strict} {
		testenv.Eventually(t, 10*time.Second, "limiter back", func() bool {
			return len(rateHeaders(s.check(t, "GET", "/openapi/v1/me", bearer(ada)))) == 3
		})
	}
}
