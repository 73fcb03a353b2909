package deviceflow

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// newFlowEnvOnPrivateRedis is newFlowEnv over a private redis-server that the test can hang, reached through the production
// client (deadlines, health breaker). e.rdb is a plain client of the same server, for the test's own reads.
func newFlowEnvOnPrivateRedis(t *testing.T) (*flowEnv, *testenv.RedisServer) {
	t.Helper()
	srv := testenv.StartRedisServer(t)
	rdb, err := redisclient.Open(redisclient.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, flowFixture)
	cfg := Config{SecretKey: flowSecret, ConsoleWebURL: "http://console.test", ConsoleAPIURL: "http://api.test",
		KnownClientIDs: []string{"difyctl"}, ApprovePerHour: 10, TTL: tokens.TTLPolicy{Days: 14}}
	e := &flowEnv{t: t, rdb: srv.Client(), pool: pool, store: postgres.NewTokenStore(pool), clock: &flowClock{},
		logs: &flowLogs{}, cfg: cfg}
	e.srv, err = New(Deps{
		Tokens:    e.store,
		Directory: postgres.NewDirectory(pool),
		Redis:     rdb,
		Limiter:   ratelimit.NewSlidingWindow(rdb),
		Revoker:   tokencache.NewRevoker(rdb, time.Minute),
		Logger:    slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       e.clock.Now,
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	e.url, e.http = ts.URL, ts.Client()
	return e, srv
}

// promptly sends a request and fails the test if it takes more than 2 s.
func promptly(t *testing.T, what string, send func() flowResp) flowResp {
	t.Helper()
	start := time.Now()
	r := send()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("%s took %v, want an answer within 2 s", what, took)
	}
	return r
}

func wantNoContent(t *testing.T, what string, r flowResp) {
	t.Helper()
	if r.Status != http.StatusNoContent || r.Raw != "" {
		t.Fatalf("%s: %d %q, want 204", what, r.Status, r.Raw)
	}
}

// TestRevocationWhileRedisHangs: with Redis hung, a revocation commits in Postgres (which records the hash) and answers 204
// at once instead of waiting on Redis or answering 503; a retry answers 204 too, and once Redis is back a retry publishes
// the tombstone the first attempt could not. The failed publishes log one warning, not one per request.
func TestRevocationWhileRedisHangs(t *testing.T) {
	e, redisSrv := newFlowEnvOnPrivateRedis(t)
	ctx := context.Background()
	ann := e.login(flowAnn, "laptop")
	desk := e.login(flowAnn, "desktop")
	keep := e.login(flowAnn, "tablet")
	tok, deskTok := ann.str("token"), desk.str("token")

	redisSrv.Pause()
	t.Cleanup(redisSrv.Resume)
	self := func() flowResp {
		return e.do(http.MethodDelete, apiPrefix+"/account/sessions/self", "", nil, withBearer(tok))
	}
	wantNoContent(t, "revoke self during the hang", promptly(t, "revoke self during the hang", self))
	if _, err := e.store.LookupByHash(ctx, tokens.Hash(tok)); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("token still live in Postgres: %v", err)
	}
	if rec, err := e.store.LookupRevoked(ctx, tokens.Hash(tok)); err != nil || rec.TokenID != ann.str("token_id") ||
		rec.Reason != tokens.ReasonRevoked {
		t.Fatalf("revocation record = %+v, %v", rec, err)
	}
	wantNoContent(t, "retried revoke self during the hang", promptly(t, "retried revoke self during the hang", self))
	wantNoContent(t, "the other endpoint, same token", promptly(t, "revoke authorization", func() flowResp {
		return e.do(http.MethodDelete, apiPrefix+"/oauth/authorizations/self", "", nil, withBearer(tok))
	}))

	// A session revoked by id with its own token, then retried with that (now revoked) token.
	byID := func() flowResp {
		return e.do(http.MethodDelete, apiPrefix+"/account/sessions/"+desk.str("token_id"), "", nil, withBearer(deskTok))
	}
	wantNoContent(t, "revoke by id during the hang", promptly(t, "revoke by id during the hang", byID))
	wantNoContent(t, "retried revoke by id", promptly(t, "retried revoke by id", byID))
	if n := e.logs.count(auditTokenRevoked); n != 2 {
		t.Fatalf("%d revocations audited, want 2", n)
	}
	if n := e.logs.Count("publishing a revocation to Redis failed"); n != 1 {
		t.Fatalf("%d publish warnings during one outage, want 1 (throttled):\n%s", n, e.logs.String())
	}

	redisSrv.Resume()
	testenv.Eventually(t, 5*time.Second, "deviceflow to use Redis again", func() bool {
		return e.get("/me", withBearer(keep.str("token"))).Status == http.StatusOK
	})
	// The resumed Redis may have run the SET queued by the first attempt; without it (the command never left the client)
	// nothing but extauthz's reconcilers or a retry writes the tombstone.
	if err := e.rdb.Del(ctx, "auth:token:"+tokens.Hash(tok)).Err(); err != nil {
		t.Fatal(err)
	}
	wantNoContent(t, "revoke self after the resume", self())
	if !e.tombstoned(tokens.Hash(tok)) {
		t.Fatal("the retry did not publish the tombstone")
	}
	for _, raw := range []string{tok, deskTok} {
		wantErr(t, e.get("/me", withBearer(raw)), http.StatusUnauthorized, "invalid_token")
	}
}

// TestRevokedTokenRevokesNothingElse: a revoked token confirms its own revocation and nothing more.
func TestRevokedTokenRevokesNothingElse(t *testing.T) {
	e := newFlowEnv(t, nil)
	ann := e.login(flowAnn, "laptop")
	other := e.login(flowAnn, "desktop")
	tok := ann.str("token")
	wantNoContent(t, "revoke self", e.do(http.MethodDelete, apiPrefix+"/account/sessions/self", "", nil, withBearer(tok)))
	for _, id := range []string{other.str("token_id"), "0a000000-0000-4000-8000-00000000dead", "not-a-uuid"} {
		r := e.do(http.MethodDelete, apiPrefix+"/account/sessions/"+id, "", nil, withBearer(tok))
		wantErr(t, r, http.StatusUnauthorized, "invalid_token")
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
	wantErr(t, e.get("/account/sessions", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
	wantErr(t, e.get("/me", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
	if r := e.get("/me", withBearer(other.str("token"))); r.Status != http.StatusOK {
		t.Fatalf("the other session: %d %s", r.Status, r.Raw)
	}
	// Its own session id, in upper case, is still the session it revoked.
	wantNoContent(t, "own id in upper case", e.do(http.MethodDelete,
		apiPrefix+"/account/sessions/"+upperASCII(ann.str("token_id")), "", nil, withBearer(tok)))
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// TestExpiredOrReplacedTokenIsNotARetriedRevocation: a token that expired, or that a newer login on the same device replaced,
// was never revoked by its holder: revocation endpoints answer 401 as every other endpoint does.
func TestExpiredOrReplacedTokenIsNotARetriedRevocation(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	e.clock.Set(start)
	expiring := e.login(flowAnn, "laptop").str("token")
	old := e.login(flowAnn, "desktop").str("token")
	fresh := e.login(flowAnn, "desktop").str("token") // rotates the desktop row
	for _, path := range []string{"/account/sessions/self", "/oauth/authorizations/self"} {
		wantErr(t, e.do(http.MethodDelete, apiPrefix+path, "", nil, withBearer(old)), http.StatusUnauthorized, "invalid_token")
	}
	if r := e.get("/me", withBearer(fresh)); r.Status != http.StatusOK {
		t.Fatalf("the replacing token: %d %s", r.Status, r.Raw)
	}

	e.clock.Set(start.Add(15 * 24 * time.Hour))
	for range 2 { // the first presentation hard-expires it, the second finds its record
		wantErr(t, e.do(http.MethodDelete, apiPrefix+"/account/sessions/self", "", nil, withBearer(expiring)),
			http.StatusUnauthorized, "invalid_token")
	}
	if rec, err := e.store.LookupRevoked(context.Background(), tokens.Hash(expiring)); err != nil || rec.Reason != tokens.ReasonExpired {
		t.Fatalf("record of the expired token = %+v, %v", rec, err)
	}
}

// TestRFC7009RetryRepublishes: revoking an already revoked token answers 200 and publishes its tombstone again, for the
// case where the first publish was lost.
func TestRFC7009RetryRepublishes(t *testing.T) {
	e := newFlowEnv(t, nil)
	tok := e.login(flowAnn, "laptop").str("token")
	revoke := func() flowResp {
		return e.postForm("/oauth/revoke", url.Values{"token": {tok}, "client_id": {"difyctl"}})
	}
	if r := revoke(); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	if err := e.rdb.Del(context.Background(), "auth:token:"+tokens.Hash(tok)).Err(); err != nil { // the lost publish
		t.Fatal(err)
	}
	if r := revoke(); r.Status != http.StatusOK {
		t.Fatalf("retried revoke: %d %s", r.Status, r.Raw)
	}
	if !e.tombstoned(tokens.Hash(tok)) {
		t.Fatal("the retry did not publish the tombstone again")
	}
	if n := e.logs.count(auditTokenRevoked); n != 1 {
		t.Fatalf("%d revocations audited, want 1", n)
	}
}
