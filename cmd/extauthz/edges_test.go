package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// blackHole accepts TCP connections and never answers: a Postgres that hangs instead of refusing.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// checkAll sends the requests concurrently and returns the responses; a gRPC error (the client's own 10 s deadline, when a
// Check hangs) fails the test.
func checkAll(t *testing.T, s *server, reqs []*authv3.CheckRequest) []*authv3.CheckResponse {
	t.Helper()
	out := make([]*authv3.CheckResponse, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := s.client.Check(ctx, req)
			if err != nil {
				t.Errorf("Check %d: %v", i, err)
				return
			}
			out[i] = resp
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

func unknownTokens(n int) []*authv3.CheckRequest {
	reqs := make([]*authv3.CheckRequest, n)
	for i := range reqs {
		reqs[i] = checkRequest("GET", "/openapi/v1/me", bearer("dfoa_"+strings.Repeat(strconv.Itoa(i%10), 43)))
	}
	return reqs
}

// TestCheckDeadlineCoversPostgres: CHECK_TIMEOUT bounds every Postgres call, connecting and queueing for a pooled
// connection included: a Postgres that hangs (rather than refuses) is a 503 answered while it still hangs, never a Check
// stuck until Envoy gives up.
func TestCheckDeadlineCoversPostgres(t *testing.T) {
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")

	t.Run("connect hangs", func(t *testing.T) {
		srv := w.start(map[string]string{"CHECK_TIMEOUT": "300ms",
			"DATABASE_URL": "postgres://postgres@" + blackHole(t) + "/none?sslmode=disable"})
		for _, resp := range checkAll(t, srv, unknownTokens(4)) {
			expectDeny(t, resp, 503, pipeline.CodeAuthUnavailable, nil)
		}
	})

	t.Run("queries and pool acquires wait on a lock", func(t *testing.T) {
		u, err := url.Parse(w.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("pool_max_conns", "1") // concurrent Checks queue in the pool for the one connection
		u.RawQuery = q.Encode()
		srv := w.start(map[string]string{"CHECK_TIMEOUT": "300ms", "DATABASE_URL": u.String()})

		ctx := context.Background()
		tx, err := w.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `LOCK TABLE oauth_access_tokens IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		for _, resp := range checkAll(t, srv, unknownTokens(4)) {
			expectDeny(t, resp, 503, pipeline.CodeAuthUnavailable, nil)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(ada)), accountHeaders(accountActive, "ada@example.com", adaID))
	})
}

// TestNegativeCacheAndDeadAccounts: a hash Postgres does not know, or whose account is gone, is refused from memory for
// the next few seconds (no second lookup, nothing charged to the client's budget) and leaves nothing in Redis; no rejected
// token ever reaches a log line.
func TestNegativeCacheAndDeadAccounts(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil)
	rdb := w.redisClient()
	ctx := context.Background()
	invalidToken := map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`}

	// An account token whose account row does not exist.
	orphan, _ := w.mint(tokens.Account, tokens.AccountSubject("aaaaaaaa-0000-4000-8000-00000000dead", "gone@example.com"), time.Hour)
	unknown := "dfoe_" + strings.Repeat("u", 43)
	for _, tok := range []string{unknown, orphan} {
		expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(tok)), 401, pipeline.CodeInvalidBearer, invalidToken)
		if n, err := rdb.Exists(ctx, "auth:token:"+tokens.Hash(tok)).Result(); err != nil || n != 0 {
			t.Errorf("%s…: auth:token entry exists = %d, %v; a bearer not known to be valid must leave nothing in Redis",
				tok[:8], n, err)
		}
		acquires := srv.app.pool.Stat().AcquireCount()
		for range 5 {
			expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(tok)), 401, pipeline.CodeInvalidBearer, invalidToken)
		}
		if n := srv.app.pool.Stat().AcquireCount() - acquires; n != 0 {
			t.Errorf("%s…: refused again with %d Postgres acquires, want the answer from memory", tok[:8], n)
		}
	}
	// Two lookups, two charges: the repeats answered from memory cost nothing.
	if n := rdb.ZCard(ctx, "rl:invalid_bearer:ip:198.51.100.7").Val(); n != 2 {
		t.Errorf("invalid-bearer budget charged %d times, want 2 (one per Postgres lookup)", n)
	}

	rejected := []string{unknown, "app-" + strings.Repeat("k", 24), "dfoa_" + strings.Repeat("m", 42),
		"dfoa_" + strings.Repeat("o", 4100)}
	for _, tok := range rejected[1:] {
		expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(tok)), 401, pipeline.CodeInvalidBearer, invalidToken)
	}
	expectDeny(t, srv.check(t, "GET", "/openapi/v1/me", bearer(orphan+","+unknown)), 400, pipeline.CodeInvalidRequest, nil)
	for _, tok := range rejected {
		if strings.Contains(w.audit.String(), tok[5:min(len(tok), 40)]) {
			t.Errorf("rejected token %s… was logged", tok[:8])
		}
	}
}

// TestRouteEdges: preflights, HEAD, and tenant ids as the client spelled them.
func TestRouteEdges(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	const v1 = "/openapi/v1"
	preflight := func(method string) map[string]string {
		return map[string]string{"origin": "https://app.example.com", "access-control-request-method": method}
	}

	// A preflight is allowed only where the request it announces could be: an EE route on CE does not exist.
	expectDeny(t, srv.check(t, "OPTIONS", v1+"/apps/permitted", preflight("GET")), 404, pipeline.CodeRouteNotFound, nil)
	expectDeny(t, srv.check(t, "OPTIONS", v1+"/me", preflight("PUT")), 404, pipeline.CodeRouteNotFound, nil)
	expectAllow(t, srv.check(t, "OPTIONS", v1+"/me", preflight("HEAD")), map[string]string{})
	// Origin alone is not a preflight.
	expectDeny(t, srv.check(t, "OPTIONS", v1+"/me", map[string]string{"origin": "https://app.example.com"}), 404,
		pipeline.CodeRouteNotFound, nil)

	expectAllow(t, srv.check(t, "HEAD", v1+"/apps/"+appOK+"/info", bearer(ada)),
		with(adaH, pipeline.HeaderAppID, appOK, pipeline.HeaderTenantID, tenantMain))
	expectAllow(t, srv.check(t, "HEAD", v1+"/apps/"+strings.ToUpper(appOK)+"/info", bearer(ada)),
		with(adaH, pipeline.HeaderAppID, appOK, pipeline.HeaderTenantID, tenantMain))
	// The verified tenant is announced in canonical form, whatever case the client used.
	expectAllow(t, srv.check(t, "GET", v1+"/apps?workspace_id="+strings.ToUpper(tenantMain), bearer(ada)),
		with(adaH, pipeline.HeaderTenantID, tenantMain))
	expectAllow(t, srv.check(t, "GET", v1+"/workspaces/"+strings.ToUpper(tenantMain), bearer(ada)),
		with(adaH, pipeline.HeaderTenantID, tenantMain))
	// Parameters the pipeline neither reads nor rejects may repeat.
	expectAllow(t, srv.check(t, "GET", v1+"/apps?page=1&page=2&workspace_id="+tenantMain, bearer(ada)),
		with(adaH, pipeline.HeaderTenantID, tenantMain))
	// A tenant the client claims but no step verified is stripped.
	removed := expectAllow(t, srv.check(t, "GET", v1+"/workspaces", with(bearer(ada), pipeline.HeaderTenantID, tenantOther)), adaH)
	if !strings.Contains(strings.Join(removed, " "), pipeline.HeaderTenantID) {
		t.Errorf("client-sent tenant id not removed: %v", removed)
	}
}

// TestDynamicMetadata: the identity of an allow, and the route and error of a deny, go to Envoy's access logs.
func TestDynamicMetadata(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")

	md := srv.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada)).GetDynamicMetadata().GetFields()
	want := map[string]string{"route": "app_run", "request_id": "req-1", "subject_type": "account",
		"subject_email": "ada@example.com", "subject_issuer": "dify:account", "account_id": accountActive, "token_id": adaID,
		"client_id": "difyctl", "scopes": "full", "tenant_id": tenantMain, "app_id": appOK}
	for k, v := range want {
		if md[k].GetStringValue() != v {
			t.Errorf("allow metadata %s = %q, want %q", k, md[k].GetStringValue(), v)
		}
	}
	if len(md) != len(want) {
		t.Errorf("allow metadata %v has fields beyond %v", md, want)
	}

	md = srv.check(t, "POST", "/openapi/v1/apps/"+appAPIDisabled+"/run", bearer(ada)).GetDynamicMetadata().GetFields()
	if md["route"].GetStringValue() != "app_run" || md["error"].GetStringValue() != string(pipeline.CodeServiceAPIDisabled) {
		t.Errorf("deny metadata %v", md)
	}
}

// TestStartErrorsNameTheVariable: a configuration that cannot work stops start-up with one line naming the variable.
func TestStartErrorsNameTheVariable(t *testing.T) {
	w := newWorld(t)
	tel, err := telemetry.Setup(context.Background(), "extauthz-test", telemetry.Config{LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for name, c := range map[string]struct{ vars map[string]string }{
		"REDIS_URL":          {map[string]string{"REDIS_URL": "http://127.0.0.1:6379"}},
		"DATABASE_URL":       {map[string]string{"DATABASE_URL": "postgres://%zz"}},
		"EXTAUTHZ_GRPC_ADDR": {map[string]string{"EXTAUTHZ_GRPC_ADDR": busy.Addr().String()}},
		"ADMIN_ADDR":         {map[string]string{"ADMIN_ADDR": busy.Addr().String()}},
		"ROUTES_FILE":        {map[string]string{"ROUTES_FILE": t.TempDir() + "/missing.yaml"}},
	} {
		app, err := Start(context.Background(), w.config(c.vars), tel)
		if app != nil {
			_ = app.Shutdown(context.Background())
		}
		var cerr *config.Error
		if !errors.As(err, &cerr) || cerr.Var != name || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: start error %v, want one line naming %s", name, err, name)
		}
	}
}

// TestRedisHangingFailsOpen: a Redis that accepts connections but never answers (a partition, not a refusal) is as
// unreachable as a stopped one: the fail-open limiter is skipped and Postgres answers within CHECK_TIMEOUT, instead of
// every Redis call in turn eating the deadline.
func TestRedisHangingFailsOpen(t *testing.T) {
	w := newWorld(t)
	w.redisURL = "redis://" + blackHole(t) + "/0"
	open := w.start(map[string]string{"CHECK_TIMEOUT": "1s"})
	strict := w.start(map[string]string{"CHECK_TIMEOUT": "1s", "RATE_LIMIT_FAIL_OPEN": "false"})
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	cy, _ := w.accountToken(accountNotMember, "cy@example.com")

	resp := open.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada))
	expectAllow(t, resp, with(accountHeaders(accountActive, "ada@example.com", adaID),
		pipeline.HeaderAppID, appOK, pipeline.HeaderTenantID, tenantMain))
	if rl := rateHeaders(resp); len(rl) != 0 {
		t.Errorf("limiter skipped, yet RateLimit headers %v", rl)
	}
	expectDeny(t, open.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(cy)), 403, pipeline.CodeWorkspaceMembershipRevoked, nil)
	expectDeny(t, open.check(t, "GET", "/openapi/v1/me", bearer("dfoa_"+strings.Repeat("h", 43))), 401, pipeline.CodeInvalidBearer,
		map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
	expectDeny(t, strict.check(t, "GET", "/openapi/v1/me", bearer(ada)), 503, pipeline.CodeAuthUnavailable, nil)

	// Readiness is the process's, not Redis's: an outage must not take every replica out of the Service at once.
	for _, s := range []*server{open, strict} {
		resp, err := http.Get("http://" + s.app.AdminAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz %d during a Redis outage", resp.StatusCode)
		}
	}
}

// TestRedisAuth: REDIS_URL carries Redis AUTH; with the right password the limiter counts in Redis, with a wrong one Redis
// is as unreachable as a stopped server (fail open, Postgres answers).
func TestRedisAuth(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	if err := rs.Client().ConfigSet(context.Background(), "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)

	w.redisURL = "redis://:s3cret@" + rs.Addr + "/0"
	resp := w.start(nil).check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); rl["ratelimit-remaining"] != "59" {
		t.Errorf("with AUTH: RateLimit headers %v, want the limiter counting", rl)
	}

	w.redisURL = "redis://:wrong@" + rs.Addr + "/0"
	resp = w.start(nil).check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); len(rl) != 0 {
		t.Errorf("wrong password: RateLimit headers %v, want the limiter skipped", rl)
	}
}

// extauthz speaks RESP2 to Redis unless REDIS_URL asks otherwise; CLIENT LIST on a private server shows what each
// connection negotiated (the test's own client, running CLIENT LIST, is left out: it speaks RESP3).
func TestRedisProtocol(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	for _, c := range []struct {
		db          int // each case its own, so CLIENT LIST tells their connections apart
		query, want string
	}{{1, "", "resp=2"}, {2, "?protocol=3", "resp=3"}} {
		w.redisURL = "redis://" + rs.Addr + "/" + strconv.Itoa(c.db) + c.query
		srv := w.start(nil)
		expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(ada)), accountHeaders(accountActive, "ada@example.com", adaID))
		clients, err := rs.Client().ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(clients, "\n") {
			if strings.Contains(line, " db="+strconv.Itoa(c.db)+" ") && !strings.Contains(line, "cmd=client|list") {
				found = found || strings.Contains(line, c.want)
			}
		}
		if !found {
			t.Errorf("REDIS_URL%s: no extauthz connection with %s in\n%s", c.query, c.want, clients)
		}
	}
}

// TestRedisOverTLS: a rediss:// REDIS_URL puts every Redis user (limiter, token cache) on TLS, and verifies the server's
// certificate. extauthz trusts the system roots (SSL_CERT_FILE points Go at a private CA in deployment); a test process
// cannot swap those after its first handshake, so the first case skips verification and the second shows it is on.
func TestRedisOverTLS(t *testing.T) {
	rs := testenv.StartRedisServerTLS(t) // its plain-text port is off: anything that works here went over TLS
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)

	w.redisURL = rs.URL() + "?skip_verify=true"
	resp := w.start(nil).check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); rl["ratelimit-remaining"] != "59" {
		t.Errorf("over TLS: RateLimit headers %v, want the limiter counting", rl)
	}
	testenv.Eventually(t, 5*time.Second, "the token cache entry written over TLS", func() bool {
		return rs.Client().Exists(context.Background(), "auth:token:"+tokens.Hash(ada)).Val() == 1
	})

	w.redisURL = rs.URL() // the test's CA is not among the system roots
	resp = w.start(nil).check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); len(rl) != 0 {
		t.Errorf("unverifiable certificate: RateLimit headers %v, want the limiter skipped", rl)
	}
}
