package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/deviceflow"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// revocationDeviceflow is a deviceflow server of w (same Postgres, Redis at redisURL through the production client) that
// logs into w's log, so the test's no-token-in-logs check covers it too.
func (w *world) revocationDeviceflow(redisURL string) (url string, rdb *redisclient.Client) {
	w.t.Helper()
	rdb, err := redisclient.Open(redisclient.Options{URL: redisURL})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = rdb.Close() })
	srv, err := deviceflow.New(deviceflow.Deps{
		Tokens:    w.store,
		Directory: postgres.NewDirectory(w.pool),
		Redis:     rdb,
		Limiter:   ratelimit.NewSlidingWindow(rdb),
		Revoker:   tokencache.NewRevoker(rdb, 0),
		Logger:    slog.New(slog.NewJSONHandler(w.audit, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, deviceflow.Config{SecretKey: "revocation-test-secret", ConsoleWebURL: "http://console.test",
		ConsoleAPIURL: "http://api.test", KnownClientIDs: []string{"difyctl"}, TTL: tokens.TTLPolicy{Days: 14}})
	if err != nil {
		w.t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	w.t.Cleanup(ts.Close)
	return ts.URL, rdb
}

// deleteSelf sends DELETE /openapi/v1/account/sessions/self and returns the status; it fails the test if the answer takes
// more than 2 s.
func deleteSelf(t *testing.T, baseURL, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, baseURL+"/openapi/v1/account/sessions/self", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("DELETE /account/sessions/self took %v, want an answer within 2 s", took)
	}
	return resp.StatusCode
}

func denied401(t *testing.T, s *server, token string) bool {
	t.Helper()
	d := s.check(t, "GET", "/openapi/v1/me", bearer(token)).GetDeniedResponse()
	return d != nil && d.GetStatus().GetCode() == 401
}

// TestRevocationDuringRedisHangReachesEveryReplica: with Redis hung, a self-revocation commits in Postgres and answers 204
// promptly (so does its retry) although nothing of it reaches Redis; a rotation made meanwhile is in the same state. Both
// replicas had both tokens cached, in Redis and in process. One refuses them while Redis still hangs; the other, asked only
// once it reads Redis again, refuses them although Redis still holds their positive entries; then the reconcilers replace
// those entries with tombstones, for Dify and every other reader.
func TestRevocationDuringRedisHangReachesEveryReplica(t *testing.T) {
	ctx := context.Background()
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	w.redisURL = rs.URL()
	// The limiter is off: the checks below are many and must all reach the token step.
	vars := map[string]string{"OPENAPI_RATE_LIMIT_PER_TOKEN": "0", "CHECK_TIMEOUT": "500ms"}
	first, second := w.start(vars), w.start(vars)
	dfURL, dfRedis := w.revocationDeviceflow(rs.URL())
	inspect := rs.Client()

	ada := tokens.AccountSubject(accountActive, "ada@example.com")
	doomed, doomedID := w.accountToken(accountActive, "ada@example.com")
	keep, keepID := w.accountToken(accountActive, "ada@example.com")
	rotating, _ := w.accountToken(accountActive, "ada@example.com")
	for _, s := range []*server{first, second} {
		for _, tok := range []string{doomed, rotating, keep} {
			// Twice: the first Check fills Redis and the replica's in-process layer as it answers, so the second is mostly
			// served by that layer (it reads Postgres again should it come before the fill lands).
			for range 2 {
				if s.check(t, "GET", "/openapi/v1/me", bearer(tok)).GetOkResponse() == nil {
					t.Fatal("a live token was refused before the hang")
				}
			}
		}
	}
	for _, tok := range []string{doomed, rotating} {
		testenv.Eventually(t, 5*time.Second, "the token cached in Redis before the hang", func() bool {
			v := inspect.Get(ctx, "auth:token:"+tokens.Hash(tok)).Val()
			return v != "" && v != "invalid"
		})
	}

	rs.Pause()
	t.Cleanup(rs.Resume)
	// deviceflow notices the hang (its breaker opens), so the revocation's publish fails at once and nothing of it is
	// queued in the hung Redis: only the reconcilers can tell the caches.
	testenv.Eventually(t, 10*time.Second, "deviceflow's Redis breaker to open", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_ = dfRedis.Ping(pctx).Err()
		return dfRedis.Breaker.Open()
	})
	if code := deleteSelf(t, dfURL, doomed); code != http.StatusNoContent {
		t.Fatalf("DELETE self during the hang: %d, want 204", code)
	}
	if _, err := w.store.LookupByHash(ctx, tokens.Hash(doomed)); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("the token is live in Postgres after a 204: %v", err)
	}
	if rec, err := w.store.LookupRevoked(ctx, tokens.Hash(doomed)); err != nil || rec.TokenID != doomedID {
		t.Fatalf("revocation record = %+v, %v; want one for token %s", rec, err, doomedID)
	}
	if code := deleteSelf(t, dfURL, doomed); code != http.StatusNoContent {
		t.Fatalf("retried DELETE self during the hang: %d, want 204", code)
	}
	// A re-mint of the rotating token's device during the hang, as a device login whose publish failed would leave it.
	old, err := w.store.LookupByHash(ctx, tokens.Hash(rotating))
	if err != nil {
		t.Fatal(err)
	}
	replacement, err := tokens.Generate(tokens.Account)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.minted = append(w.minted, replacement)
	w.mu.Unlock()
	now := time.Now()
	m, err := w.store.Mint(ctx, tokens.MintRequest{Subject: ada, ClientID: old.ClientID, DeviceLabel: old.DeviceLabel,
		Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(replacement), Now: now, ExpiresAt: now.Add(24 * time.Hour)})
	if err != nil || m.RotatedHash != tokens.Hash(rotating) {
		t.Fatalf("rotation: %+v, %v", m, err)
	}

	// The first replica refuses both tokens while Redis still hangs.
	for _, tok := range []string{doomed, rotating} {
		testenv.Eventually(t, 5*time.Second, "the first replica to refuse the token while Redis hangs", func() bool {
			return denied401(t, first, tok)
		})
	}

	rs.Resume()
	// The second replica is not asked about the dead tokens until it reads Redis again (a fresh token's fill shows it does),
	// where their positive entries may still be: nothing but the reconciler tells it they are dead.
	probe, probeID := w.accountToken(accountActive, "ada@example.com")
	testenv.Eventually(t, 5*time.Second, "the second replica to read and fill Redis again", func() bool {
		expectAllow(t, second.check(t, "GET", "/openapi/v1/me", bearer(probe)), accountHeaders(accountActive, "ada@example.com", probeID))
		return inspect.Exists(ctx, "auth:token:"+tokens.Hash(probe)).Val() == 1
	})
	for _, tok := range []string{doomed, rotating} {
		testenv.Eventually(t, time.Second, "the second replica to refuse a token its Redis entry still says is valid", func() bool {
			return denied401(t, second, tok)
		})
	}
	for _, tok := range []string{doomed, rotating} {
		testenv.Eventually(t, 5*time.Second, "the reconcilers to write the tombstone after the resume", func() bool {
			return inspect.Get(ctx, "auth:token:"+tokens.Hash(tok)).Val() == "invalid"
		})
		if ttl := inspect.PTTL(ctx, "auth:token:"+tokens.Hash(tok)).Val(); ttl <= 0 || ttl > 80*time.Second {
			t.Fatalf("tombstone TTL %v, want what is left of the cache TTL + margin", ttl)
		}
	}
	for _, s := range []*server{first, second} {
		for _, tok := range []string{doomed, rotating} {
			expectDeny(t, s.check(t, "GET", "/openapi/v1/me", bearer(tok)), 401, pipeline.CodeInvalidBearer,
				map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
		}
		expectAllow(t, s.check(t, "GET", "/openapi/v1/me", bearer(keep)), accountHeaders(accountActive, "ada@example.com", keepID))
		expectAllow(t, s.check(t, "GET", "/openapi/v1/me", bearer(replacement)),
			accountHeaders(accountActive, "ada@example.com", m.Token.ID))
	}
	// After Redis is back a retry still answers 204.
	if code := deleteSelf(t, dfURL, doomed); code != http.StatusNoContent {
		t.Fatalf("retried DELETE self after the resume: %d, want 204", code)
	}
}
