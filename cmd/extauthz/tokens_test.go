package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

func (w *world) redisClient() *redis.Client {
	w.t.Helper()
	return testenv.RedisClient(w.t, w.redisURL)
}

func (w *world) auditCount(tokenID string) int {
	n := 0
	for _, line := range strings.Split(w.audit.String(), "\n") {
		if strings.Contains(line, `"event":"oauth.token_expired"`) && strings.Contains(line, `"token_id":"`+tokenID+`"`) {
			n++
		}
	}
	return n
}

// TestExpiredTokenHardExpiredOnce: 20 concurrent Checks of an expired token are all refused, and exactly one of them
// revokes the row and emits oauth.token_expired — both for a token only Postgres knows and for one already cached.
func TestExpiredTokenHardExpiredOnce(t *testing.T) {
	w := newWorld(t)
	a, b := w.start(nil), w.start(nil)
	subject := tokens.AccountSubject(accountActive, "ada@example.com")

	uncached, uncachedID := w.mint(tokens.Account, subject, -time.Minute)
	// The second token is used (and so cached) while live, then expires.
	cached, _ := tokens.Generate(tokens.Account)
	cachedID := w.mintHash("dfoa_", subject, cached, 1500*time.Millisecond)
	expectAllow(t, a.check(t, "GET", "/openapi/v1/me", bearer(cached)), accountHeaders(accountActive, "ada@example.com", cachedID))
	testenv.Eventually(t, 5*time.Second, "cached token expires", func() bool { return w.expired(cachedID) })

	for _, tok := range []struct{ plain, id string }{{uncached, uncachedID}, {cached, cachedID}} {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv := a
				if i%2 == 1 {
					srv = b
				}
				expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(tok.plain)), 401, pipeline.CodeInvalidBearer,
					map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
			}()
		}
		wg.Wait()
		var revoked bool
		var hash *string
		if err := w.pool.QueryRow(context.Background(),
			`SELECT revoked_at IS NOT NULL, token_hash FROM oauth_access_tokens WHERE id = $1`, tok.id).Scan(&revoked, &hash); err != nil {
			t.Fatal(err)
		}
		if !revoked || hash != nil {
			t.Errorf("token %s: revoked=%v hash=%v, want hard-expired", tok.id, revoked, hash)
		}
		if n := w.auditCount(tok.id); n != 1 {
			t.Errorf("token %s: %d oauth.token_expired events, want exactly 1", tok.id, n)
		}
	}
}

// expired reports whether the token row's expiry has passed by the database's clock.
func (w *world) expired(id string) bool {
	var expired bool
	if err := w.pool.QueryRow(context.Background(), `SELECT expires_at <= now() FROM oauth_access_tokens WHERE id = $1`, id).Scan(&expired); err != nil {
		w.t.Fatal(err)
	}
	return expired
}

// TestRevocationHonoured: revoking or rotating a token that was just allowed (and so is cached in Redis and in memory)
// is honoured within a bounded poll, by every replica, and stays honoured.
func TestRevocationHonoured(t *testing.T) {
	w := newWorld(t)
	a, b := w.start(nil), w.start(nil)
	revoker := tokencache.NewRevoker(w.redisClient(), 60*time.Second)
	subject := tokens.AccountSubject(accountActive, "ada@example.com")
	ctx := context.Background()

	deniedEverywhere := func(plain string) func() bool {
		return func() bool {
			for _, s := range []*server{a, b} {
				if s.check(t, "GET", "/openapi/v1/me", bearer(plain)).GetDeniedResponse() == nil {
					return false
				}
			}
			return true
		}
	}

	t.Run("revoke", func(t *testing.T) {
		plain, id := w.accountToken(accountActive, "ada@example.com")
		for _, s := range []*server{a, b, a, b} {
			expectAllow(t, s.check(t, "GET", "/openapi/v1/me", bearer(plain)), accountHeaders(accountActive, "ada@example.com", id))
		}
		old, err := w.store.Revoke(ctx, subject, id, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := revoker.Revoke(ctx, old.TokenHash); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Second, "revoked token refused on both replicas", deniedEverywhere(plain))
		for range 10 {
			expectDeny(t, a.check(t, "GET", "/openapi/v1/me", bearer(plain)), 401, pipeline.CodeInvalidBearer,
				map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
		}
		// Refused by the tombstone or from memory: no lookup, so nothing charged to the client's invalid-bearer budget.
		if n := w.redisClient().Exists(ctx, "rl:invalid_bearer:ip:198.51.100.7").Val(); n != 0 {
			t.Error("refusals of a revoked token charged the client's invalid-bearer budget")
		}
	})

	t.Run("rotate", func(t *testing.T) {
		plain, _ := tokens.Generate(tokens.Account)
		id := w.mintHash("dfoa_", subject, plain, time.Hour)
		expectAllow(t, a.check(t, "GET", "/openapi/v1/me", bearer(plain)), accountHeaders(accountActive, "ada@example.com", id))
		expectAllow(t, b.check(t, "GET", "/openapi/v1/me", bearer(plain)), accountHeaders(accountActive, "ada@example.com", id))
		// Same device: the mint rotates the row in place.
		next, _ := tokens.Generate(tokens.Account)
		m, err := w.store.Mint(ctx, tokens.MintRequest{Subject: subject, ClientID: "difyctl",
			DeviceLabel: "device-" + tokens.Hash(plain)[:12], Prefix: "dfoa_", TokenHash: tokens.Hash(next),
			Now: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil || m.RotatedHash != tokens.Hash(plain) {
			t.Fatalf("rotate: %+v, %v", m, err)
		}
		if err := revoker.Revoke(ctx, m.RotatedHash); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Second, "rotated-out token refused on both replicas", deniedEverywhere(plain))
		expectAllow(t, a.check(t, "GET", "/openapi/v1/me", bearer(next)), accountHeaders(accountActive, "ada@example.com", id))
	})

	t.Run("check racing a revocation never resurrects the token", func(t *testing.T) {
		rdb := w.redisClient()
		for round := range 5 {
			plain, _ := tokens.Generate(tokens.Account)
			id := w.mintHash("dfoa_", subject, plain, time.Hour)
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := a
					if i%2 == 1 {
						s = b
					}
					s.check(t, "GET", "/openapi/v1/me", bearer(plain)) // allow or deny: the race decides
				}()
			}
			old, err := w.store.Revoke(ctx, subject, id, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := revoker.Revoke(ctx, old.TokenHash); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			testenv.Eventually(t, 2*time.Second, fmt.Sprintf("round %d: refused", round), deniedEverywhere(plain))
			for range 10 {
				if deniedEverywhere(plain)() == false {
					t.Fatalf("round %d: revoked token allowed again", round)
				}
			}
			if v, err := rdb.Get(ctx, "auth:token:"+old.TokenHash).Result(); err != nil || v != "invalid" {
				t.Errorf("round %d: cache entry %q, %v; want the tombstone", round, v, err)
			}
		}
	})
}

// TestTokenRowChecks: a row whose prefix disagrees with the presented token is refused and logged; an unknown token
// spends the client's invalid-bearer budget, after which lookups from that address share the suspect lane (429 with
// Retry-After 1 once it is empty), while a valid token from that address is still allowed.
func TestTokenRowChecks(t *testing.T) {
	w := newWorld(t)
	srv := w.start(map[string]string{"INVALID_BEARER_PER_IP_PER_MINUTE": "3"})

	ext, _ := tokens.Generate(tokens.ExternalSSO)
	w.mintHash("dfoa_", tokens.AccountSubject(accountActive, "ada@example.com"), ext, time.Hour)
	expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(ext)), 401, pipeline.CodeInvalidBearer,
		map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
	if !strings.Contains(w.audit.String(), "inconsistent with the presented prefix") {
		t.Error("prefix inconsistency not logged")
	}
	if strings.Contains(w.audit.String(), ext) {
		t.Fatal("a token was logged")
	}

	valid, validID := w.accountToken(accountActive, "ada@example.com")
	cachedValid, cachedID := w.accountToken(accountActive, "ada@example.com")
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(cachedValid)), accountHeaders(accountActive, "ada@example.com", cachedID))
	// The prefix mismatch above was the first invalid outcome; two more exhaust the budget of 3.
	for i := range 2 {
		unknown := "dfoa_" + strings.Repeat(strconv.Itoa(i), 43)
		expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(unknown)), 401, pipeline.CodeInvalidBearer,
			map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
	}

	// Over budget: 100 distinct unknown tokens at once share the suspect lane (20 lookups a second per process, as much
	// again in a burst). Each is refused, 401 when the lane looked it up, 429 Retry-After 1 when the lane was empty.
	start := time.Now()
	resps := checkAll(t, srv, randomBearers(t, 100))
	elapsed := time.Since(start)
	lookedUp, refused := 0, 0
	for _, resp := range resps {
		switch code := resp.GetDeniedResponse().GetStatus().GetCode(); code {
		case 401:
			lookedUp++
		case 429:
			refused++
			expectDeny(t, resp, 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "1"})
		default:
			t.Fatalf("unknown token over budget: %v", resp)
		}
	}
	if bound := 20 + int(20*elapsed.Seconds()) + 1; lookedUp > bound {
		t.Errorf("suspect lane looked up %d in %v, want at most %d", lookedUp, elapsed, bound)
	}
	if refused == 0 && elapsed < 3*time.Second { // slower than that, the lane refills fast enough for all 100
		t.Errorf("suspect lane refused none of 100 lookups in %v", elapsed)
	}

	// A valid token from the same address is never locked out: at worst it is asked to retry in a second.
	allowedOrRetry(t, srv, "198.51.100.7", valid, accountHeaders(accountActive, "ada@example.com", validID))
	// A cached one needs no lookup, and other addresses are unaffected.
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(cachedValid)), accountHeaders(accountActive, "ada@example.com", cachedID))
	other, otherID := w.accountToken(accountActive, "ada@example.com")
	expectAllow(t, checkFrom(t, srv, "203.0.113.9", other), accountHeaders(accountActive, "ada@example.com", otherID))
}

// randomBearers returns Check requests for n distinct well-formed bearers that no one minted.
func randomBearers(t *testing.T, n int) []*authv3.CheckRequest {
	t.Helper()
	reqs := make([]*authv3.CheckRequest, n)
	for i := range reqs {
		plain, err := tokens.Generate(tokens.Account)
		if err != nil {
			t.Fatal(err)
		}
		reqs[i] = checkRequest("GET", "/openapi/v1/me", bearer(plain))
	}
	return reqs
}

// checkFrom sends a Check of GET /me with plain as if from the client address addr.
func checkFrom(t *testing.T, s *server, addr, plain string) *authv3.CheckResponse {
	t.Helper()
	req := checkRequest("GET", "/openapi/v1/me", bearer(plain))
	req.Attributes.Source.Address.GetSocketAddress().Address = addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.client.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// allowedOrRetry asserts that a valid token sent from addr is allowed, after at most a few 429s asking to retry in a second
// (the suspect lane was empty), and never refused in any other way.
func allowedOrRetry(t *testing.T, s *server, addr, plain string, want map[string]string) {
	t.Helper()
	var resp *authv3.CheckResponse
	retries := 0
	testenv.Eventually(t, 3*time.Second, "valid token from an address over its budget allowed", func() bool {
		resp = checkFrom(t, s, addr, plain)
		if resp.GetOkResponse() != nil {
			return true
		}
		expectDeny(t, resp, 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "1"})
		retries++
		return false
	})
	expectAllow(t, resp, want)
	t.Logf("valid token from an address over its budget allowed after %d retries", retries)
}

// TestRandomBearersLeaveNoTrace: 1,000 random bearers from one address leave no per-token key in Redis (neither a limiter
// bucket nor a negative cache entry), cost Postgres at most the address's budget plus what the suspect lane admits, and a
// valid token that Redis has never seen, sent from that address right after, is still allowed.
func TestRandomBearersLeaveNoTrace(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil) // INVALID_BEARER_PER_IP_PER_MINUTE 60
	valid, validID := w.accountToken(accountActive, "ada@example.com")
	rdb := w.redisClient()
	ctx := context.Background()

	acquires := srv.app.pool.Stat().AcquireCount()
	start := time.Now()
	resps := checkAll(t, srv, randomBearers(t, 1000))
	elapsed := time.Since(start)
	lookups := srv.app.pool.Stat().AcquireCount() - acquires
	refused := 0
	for _, resp := range resps {
		switch resp.GetDeniedResponse().GetStatus().GetCode() {
		case 401:
		case 429:
			refused++
			expectDeny(t, resp, 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "1"})
		default:
			t.Fatalf("random bearer: %v", resp)
		}
	}
	t.Logf("1000 random bearers in %v: %d Postgres lookups, %d refused by the empty suspect lane", elapsed, lookups, refused)
	if bound := 60 + 20 + int64(20*elapsed.Seconds()) + 1; lookups > bound {
		t.Errorf("%d Postgres lookups for 1000 random bearers from one address in %v, want at most %d", lookups, elapsed, bound)
	}
	for _, pattern := range []string{"rl:token_id:token:*", "auth:token:*"} {
		keys, err := rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 0 {
			t.Errorf("%d %s keys after random bearers, want none", len(keys), pattern)
		}
	}

	allowedOrRetry(t, srv, "198.51.100.7", valid, accountHeaders(accountActive, "ada@example.com", validID))
	testenv.Eventually(t, 5*time.Second, "the valid token's limiter bucket and cache entry in Redis", func() bool {
		return rdb.Exists(ctx, "rl:token_id:token:"+tokens.Hash(valid), "auth:token:"+tokens.Hash(valid)).Val() == 2
	})
}

// TestConcurrentLookupsCollapse: 50 concurrent Checks of one token no cache knows make one token lookup, not 50: with the
// table locked, exactly one lookup waits on the lock while every Check is past its cache read; once the lock goes, all 50
// are allowed, their account lookups collapsed too.
func TestConcurrentLookupsCollapse(t *testing.T) {
	rs := testenv.StartRedisServer(t) // private: its command counts are this test's alone
	w := newWorld(t)
	w.redisURL = rs.URL()
	srv := w.start(nil)
	plain, id := w.accountToken(accountActive, "ada@example.com")
	ctx := context.Background()

	tx, err := w.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE oauth_access_tokens IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	cacheReads := func() int { return commandCalls(t, rs.Client(), "get") }
	before := cacheReads()
	acquires := srv.app.pool.Stat().AcquireCount()
	done := make(chan *authv3.CheckResponse, 50)
	for range 50 {
		go func() {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			resp, err := srv.client.Check(ctx, checkRequest("GET", "/openapi/v1/me", bearer(plain)))
			if err != nil {
				t.Errorf("Check: %v", err)
			}
			done <- resp
		}()
	}

	// Once all 50 have missed the Redis cache, all 50 are at the lookup.
	testenv.Eventually(t, 5*time.Second, "every Check past its cache read", func() bool { return cacheReads()-before >= 50 })
	waiting := func() int {
		var n int
		if err := w.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%FROM oauth_access_tokens%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.Eventually(t, 5*time.Second, "the lookup waits on the lock", func() bool { return waiting() >= 1 })
	if n := waiting(); n != 1 {
		t.Errorf("%d token lookups wait on the lock for 50 Checks of one token, want 1", n)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if resp := <-done; resp != nil {
			expectAllow(t, resp, accountHeaders(accountActive, "ada@example.com", id))
		}
	}
	n := srv.app.pool.Stat().AcquireCount() - acquires
	t.Logf("50 concurrent Checks of one uncached token: %d Postgres acquires", n)
	if n >= 25 {
		t.Errorf("%d Postgres acquires for 50 concurrent Checks of one token, want the token and account lookups shared", n)
	}
}

// commandCalls is how many times clients of rdb's server ran cmd (INFO commandstats).
func commandCalls(t *testing.T, rdb *redis.Client, cmd string) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			calls, _, _ := strings.Cut(rest, ",")
			n, err := strconv.Atoi(calls)
			if err != nil {
				t.Fatalf("commandstats line %q", line)
			}
			return n
		}
	}
	return 0
}
