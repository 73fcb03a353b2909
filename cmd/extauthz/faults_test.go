package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

func rateHeaders(resp *authv3.CheckResponse) map[string]string {
	out := map[string]string{}
	for _, h := range resp.GetOkResponse().GetResponseHeadersToAdd() {
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

// TestRateLimitSharedAcrossReplicas: 60 requests per token per sliding minute across two replicas, then 429 with
// Retry-After; requests a later step denies still count.
func TestRateLimitSharedAcrossReplicas(t *testing.T) {
	w := newWorld(t)
	a, b := w.start(nil), w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	cy, _ := w.accountToken(accountNotMember, "cy@example.com")

	for i := range 60 {
		s := a
		if i%2 == 1 {
			s = b
		}
		resp := s.check(t, "GET", "/openapi/v1/me", bearer(ada))
		expectAllow(t, resp, accountHeaders(accountActive, "ada@example.com", adaID))
		rl := rateHeaders(resp)
		if rl["ratelimit-limit"] != "60" || rl["ratelimit-remaining"] != strconv.Itoa(59-i) {
			t.Fatalf("request %d: RateLimit headers %v", i+1, rl)
		}
		if reset, err := strconv.Atoi(rl["ratelimit-reset"]); err != nil || reset < 1 || reset > 60 {
			t.Fatalf("request %d: RateLimit-Reset %q", i+1, rl["ratelimit-reset"])
		}
	}
	for _, s := range []*server{a, b} {
		resp := s.check(t, "GET", "/openapi/v1/me", bearer(ada))
		expectDeny(t, resp, 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "*"})
		var retry string
		for _, h := range resp.GetDeniedResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "retry-after" {
				retry = h.GetHeader().GetValue()
			}
		}
		if n, err := strconv.Atoi(retry); err != nil || n < 1 || n > 60 {
			t.Errorf("Retry-After %q", retry)
		}
	}

	// Denied by membership, yet counted: the 61st is refused by the limiter.
	for range 60 {
		expectDeny(t, a.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(cy)), 403, pipeline.CodeWorkspaceMembershipRevoked, nil)
	}
	expectDeny(t, b.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(cy)), 429, pipeline.CodeRateLimited, map[string]string{"retry-after": "*"})
}

// TestRedisOutage: with the private redis-server stopped, decisions come from Postgres with the limiter skipped (or 503
// with RATE_LIMIT_FAIL_OPEN=false), never a wrong allow; everything recovers once Redis is back.
func TestRedisOutage(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	w.redisURL = rs.URL()
	open := w.start(nil)
	strict := w.start(map[string]string{"RATE_LIMIT_FAIL_OPEN": "false"})
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	fresh, freshID := w.accountToken(accountActive, "ada@example.com")
	cy, _ := w.accountToken(accountNotMember, "cy@example.com")
	doomed, doomedID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	run := "/openapi/v1/apps/" + appOK + "/run"

	expectAllow(t, open.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
	expectAllow(t, open.check(t, "GET", "/openapi/v1/me", bearer(doomed)), accountHeaders(accountActive, "ada@example.com", doomedID))

	rs.Stop()
	// Revoked while Redis is down: no tombstone can be written, so the replicas must stop trusting what they cached.
	if _, err := w.store.Revoke(context.Background(), tokens.AccountSubject(accountActive, "ada@example.com"), doomedID, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp := open.check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); len(rl) != 0 {
		t.Errorf("limiter skipped, yet RateLimit headers %v", rl)
	}
	expectAllow(t, open.check(t, "GET", "/openapi/v1/me", bearer(fresh)), accountHeaders(accountActive, "ada@example.com", freshID))
	expectAllow(t, open.check(t, "POST", run, bearer(ada)), with(adaH, pipeline.HeaderAppID, appOK, pipeline.HeaderTenantID, tenantMain))
	expectDeny(t, open.check(t, "POST", run, bearer(cy)), 403, pipeline.CodeWorkspaceMembershipRevoked, nil)
	expectDeny(t, open.check(t, "GET", "/openapi/v1/me", bearer("dfoa_"+strings.Repeat("q", 43))), 401, pipeline.CodeInvalidBearer,
		map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
	testenv.Eventually(t, 5*time.Second, "token revoked during the outage refused", func() bool {
		return open.check(t, "GET", "/openapi/v1/me", bearer(doomed)).GetDeniedResponse() != nil
	})
	expectDeny(t, strict.check(t, "GET", "/openapi/v1/me", bearer(ada)), 503, pipeline.CodeAuthUnavailable, nil)
	if !regexp.MustCompile(`authgate_extauthz_ratelimit_skipped_total\{[^}]*limit="token"[^}]*\} [1-9]`).MatchString(metricsText(t, open)) {
		t.Error("skipped limiter decisions not counted in /metrics")
	}

	rs.Start()
	testenv.Eventually(t, 5*time.Second, "limiter back", func() bool {
		return len(rateHeaders(open.check(t, "GET", "/openapi/v1/me", bearer(ada)))) == 3
	})
	testenv.Eventually(t, 5*time.Second, "strict replica back", func() bool {
		return strict.check(t, "GET", "/openapi/v1/me", bearer(ada)).GetOkResponse() != nil
	})
	expectDeny(t, open.check(t, "GET", "/openapi/v1/me", bearer(doomed)), 401, pipeline.CodeInvalidBearer,
		map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`})
}

// TestRedisHung: with Redis hung (SIGSTOP: connections open, nothing answered) Checks stop waiting on it as soon as the
// health breaker opens. A recently used valid token is decided by Postgres at once: 30 sequential Checks in well under
// 3 s, all allowed without the limiter (fail-open) or all 503 (fail-closed); 300 concurrent Checks each answer within
// CHECK_TIMEOUT; the outage logs a handful of lines, not one per Check; within a second of Redis resuming the limiter
// counts again.
func TestRedisHung(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	w.redisURL = rs.URL()
	const checkTimeout = 300 * time.Millisecond
	vars := map[string]string{"CHECK_TIMEOUT": checkTimeout.String()}
	open := w.start(vars)
	strict := w.start(with(vars, "RATE_LIMIT_FAIL_OPEN", "false"))
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	unused, unusedID := w.accountToken(accountActive, "ada@example.com") // first presented during the hang
	for _, s := range []*server{open, strict} {
		if rl := rateHeaders(s.check(t, "GET", "/openapi/v1/me", bearer(ada))); len(rl) != 3 {
			t.Fatalf("before the hang: RateLimit headers %v", rl)
		}
	}
	logLines := func() int { return strings.Count(w.audit.String(), "\n") }
	linesBefore := logLines()

	rs.Pause()
	t.Cleanup(rs.Resume)
	for _, c := range []struct {
		name string
		srv  *server
		want func(*authv3.CheckResponse)
	}{
		{"fail-open", open, func(resp *authv3.CheckResponse) {
			expectAllow(t, resp, adaH)
			if rl := rateHeaders(resp); len(rl) != 0 {
				t.Errorf("limiter skipped, yet RateLimit headers %v", rl)
			}
		}},
		{"fail-closed", strict, func(resp *authv3.CheckResponse) {
			expectDeny(t, resp, 503, pipeline.CodeAuthUnavailable, nil)
		}},
	} {
		start := time.Now()
		for range 30 {
			c.want(c.srv.check(t, "GET", "/openapi/v1/me", bearer(ada)))
		}
		elapsed := time.Since(start)
		t.Logf("%s: 30 sequential Checks with Redis hung: %v", c.name, elapsed)
		if elapsed > 3*time.Second {
			t.Errorf("%s: 30 sequential Checks with Redis hung took %v, want under 3 s", c.name, elapsed)
		}
	}

	// 300 at once, half of them with a token no cache has seen: each is answered within the Check deadline (plus the
	// test's own scheduling), by Postgres, one shared lookup per token at a time, and all from one address without
	// spending its invalid-bearer budget.
	const slack = 500 * time.Millisecond
	var wg sync.WaitGroup
	for i := range 300 {
		plain, want := ada, adaH
		if i%2 == 1 {
			plain, want = unused, accountHeaders(accountActive, "ada@example.com", unusedID)
		}
		wg.Go(func() {
			start := time.Now()
			resp := open.check(t, "GET", "/openapi/v1/me", bearer(plain))
			if elapsed := time.Since(start); elapsed > checkTimeout+slack {
				t.Errorf("a concurrent Check took %v with Redis hung", elapsed)
			}
			if resp.GetOkResponse() == nil {
				t.Errorf("a concurrent Check was denied: %s", resp.GetDeniedResponse().GetBody())
				return
			}
			expectAllow(t, resp, want)
		})
	}
	wg.Wait()
	if n := metricValue(t, open, `authgate_extauthz_ratelimit_skipped_total\{[^}]*limit="token"[^}]*\}`); n < 330 {
		t.Errorf("%v skipped limiter decisions counted, want every one of the 330", n)
	}
	// 360 Checks during the outage; a line per Check would be hundreds.
	n := logLines() - linesBefore
	t.Logf("%d log lines during the outage", n)
	if n > 12 {
		t.Errorf("%d log lines during the outage, want a handful:\n%s", n, w.audit.String())
	}

	rs.Resume()
	resumed := time.Now()
	testenv.Eventually(t, 2*time.Second, "limiter counting again after Redis resumed", func() bool {
		return len(rateHeaders(open.check(t, "GET", "/openapi/v1/me", bearer(ada)))) == 3
	})
	elapsed := time.Since(resumed)
	t.Logf("limiter counting again %v after Redis resumed", elapsed)
	if elapsed > time.Second {
		t.Errorf("the limiter counted again %v after Redis resumed, want within 1 s", elapsed)
	}
	testenv.Eventually(t, 2*time.Second, "fail-closed replica allows again", func() bool {
		return strict.check(t, "GET", "/openapi/v1/me", bearer(ada)).GetOkResponse() != nil
	})
}

// TestPostgresOutage: a replica that cannot reach Postgres answers 503 for anything it must look up, and still serves
// tokens cached in Redis by a healthy replica (no Postgres on the warm path).
func TestPostgresOutage(t *testing.T) {
	w := newWorld(t)
	healthy := w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	other, _ := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	expectAllow(t, healthy.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
	cached := testenv.RedisClient(t, w.redisURL)
	testenv.Eventually(t, 5*time.Second, "the healthy replica's cache fill", func() bool { // written after the answer
		return cached.Exists(context.Background(), "auth:token:"+tokens.Hash(ada)).Val() == 1
	})

	cut := w.start(map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"})
	expectAllow(t, cut.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
	expectDeny(t, cut.check(t, "GET", "/openapi/v1/me", bearer(other)), 503, pipeline.CodeAuthUnavailable, nil)
	expectDeny(t, cut.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada)), 503, pipeline.CodeAuthUnavailable, nil)
	expectDeny(t, cut.check(t, "GET", "/openapi/v1/me", bearer("dfoa_"+strings.Repeat("p", 43))), 503, pipeline.CodeAuthUnavailable, nil)
	expectAllow(t, cut.check(t, "GET", "/openapi/v1/_health", nil), map[string]string{})
}

// TestBannedAccountRefused: a token of an account banned after it was cached is refused once the cache entry is
// re-validated, and a banned account's token is never admitted from Postgres.
func TestBannedAccountRefused(t *testing.T) {
	w := newWorld(t)
	// The limiter is off so the polling below cannot run into 429 before the cache entry expires.
	srv := w.start(map[string]string{"TOKEN_CACHE_TTL": "1s", "OPENAPI_RATE_LIMIT_PER_TOKEN": "0"})
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(ada)), accountHeaders(accountActive, "ada@example.com", adaID))
	if _, err := w.pool.Exec(context.Background(), `UPDATE accounts SET status = 'banned' WHERE id = $1`, accountActive); err != nil {
		t.Fatal(err)
	}
	// Membership is refused at once (the account is no longer active) for verdicts not yet cached ...
	expectDeny(t, srv.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada)), 403, pipeline.CodeWorkspaceMembershipRevoked, nil)
	// ... and the token itself once its cache entry has expired.
	testenv.Eventually(t, 5*time.Second, "banned account's token refused", func() bool {
		d := srv.check(t, "GET", "/openapi/v1/me", bearer(ada)).GetDeniedResponse()
		return d != nil && d.GetStatus().GetCode() == 401
	})
}

// TestAdminEndpoints: liveness, readiness and Prometheus metrics on the admin port, gRPC health on the gRPC port.
func TestAdminEndpoints(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil)
	ada, _ := w.accountToken(accountActive, "ada@example.com")
	srv.check(t, "GET", "/openapi/v1/me", bearer(ada))
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + srv.app.AdminAddr() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	conn, err := grpc.NewClient(srv.app.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("grpc health %q: %v, %v", svc, h, err)
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	listed, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range listed.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "envoy.service.auth.v3.Authorization") || !slices.Contains(names, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v", names)
	}

	text := metricsText(t, srv)
	if !regexp.MustCompile(`authgate_extauthz_checks_total\{[^}]*outcome="allow"[^}]*route="me"[^}]*\} 1`).MatchString(text) {
		t.Errorf("checks counter missing:\n%s", grep(text, "authgate_extauthz"))
	}
	if !strings.Contains(text, "authgate_extauthz_check_duration_seconds_bucket") {
		t.Errorf("duration histogram missing:\n%s", grep(text, "authgate_extauthz"))
	}
}

func metricsText(t *testing.T, s *server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.app.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the value of the one series of s's /metrics that series (a regular expression) matches; 0 if none does.
func metricValue(t *testing.T, s *server, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + series + ` (\S+)$`).FindStringSubmatch(metricsText(t, s))
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("metric %s: %v", series, err)
	}
	return v
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
