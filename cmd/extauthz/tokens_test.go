package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

func (w *world) redisClient() *redis.Client {
	w.t.Helper()
	opts, err := redis.ParseURL(w.redisURL)
	if err != nil {
		w.t.Fatal(err)
	}
	c := redis.NewClient(opts)
	w.t.Cleanup(func() { c.Close() })
	return c
}

func (w *world) auditCount(tokenID string) int {
	n := 0
	for _, line := range strings.Split(w.audit.String(), "\n") {
		if strings.Contains(line, `"audit_event":"oauth.token_expired"`) && strings.Contains(line, `"token_id":"`+tokenID+`"`) {
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
// spends the client's invalid-bearer budget, after which lookups from that address are refused with 429.
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
	flood := "dfoa_" + strings.Repeat("f", 43)
	expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(flood)), 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "*"})
	// A lookup of an uncached valid token is refused too (the budget guards lookups) ...
	expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(valid)), 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "*"})
	// ... but a cached one still works, and other addresses are unaffected.
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(cachedValid)), accountHeaders(accountActive, "ada@example.com", cachedID))
	req := checkRequest("GET", "/openapi/v1/me", bearer(valid))
	req.Attributes.Source.Address.GetSocketAddress().Address = "203.0.113.9"
	resp, err := srv.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	expectAllow(t, resp, accountHeaders(accountActive, "ada@example.com", validID))
}
