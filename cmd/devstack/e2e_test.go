package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/deviceflow"
	"github.com/authgate/authgate/internal/envoyshim"
	"github.com/authgate/authgate/internal/extauthz"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
)

const e2eSecret = "e2e-secret-key-long-enough-for-deviceflow"

var appRunPath = "/openapi/v1/apps/" + demoAppID + "/run"

// identityHeaders are every x-authgate-* header an allowed account request to an app route carries (docs/reference/check.md).
var identityHeaders = map[string]string{
	"x-authgate-subject-type":   "account",
	"x-authgate-subject-email":  demoEmail,
	"x-authgate-subject-issuer": "dify:account",
	"x-authgate-account-id":     demoAccountID,
	"x-authgate-client-id":      "difyctl",
	"x-authgate-scopes":         "full",
	"x-authgate-tenant-id":      demoTenantID,
	"x-authgate-app-id":         demoAppID,
}

// e2eStack is the production composition — extauthz and deviceflow on real Postgres and Redis — behind the Envoy
// stand-in configured as envoy/envoy.yaml, with the echo upstream as Dify's API.
type e2eStack struct {
	shim, admin string
	spans       *tracetest.InMemoryExporter

	mu      sync.Mutex
	checked int // requests sent through routes that call Check
}

func startE2E(t *testing.T, env map[string]string) *e2eStack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, demoFixture())
	rdb := testenv.Redis(t)

	lookup := overlay(func(name string) (string, bool) { v, ok := env[name]; return v, ok },
		map[string]string{"DATABASE_URL": "postgres://unused", "REDIS_URL": "redis://unused", "SECRET_KEY": e2eSecret,
			"CONSOLE_WEB_URL": "http://console.example", "CONSOLE_API_URL": "http://api.example",
			"SHUTDOWN_DRAIN_DELAY": "0"}, nil)
	ecfg, _, err := config.LoadExtauthz(lookup)
	if err != nil {
		t.Fatal(err)
	}
	dcfg, _, err := config.LoadDeviceflow(lookup)
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.Setup(ctx, "e2e", telemetry.Config{LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewInMemoryExporter()
	tel.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)).Tracer("e2e")

	tokens, dir := postgres.NewTokenStore(pool), postgres.NewDirectory(pool)
	grpcLn, adminLn := listen(t), listen(t)
	authz, err := extauthz.Start(ctx, ecfg, extauthz.Deps{Tokens: tokens, Directory: dir, Redis: rdb, Telemetry: tel},
		grpcLn, adminLn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = authz.Shutdown(sctx)
	})

	df, err := deviceflow.New(deviceflow.Deps{Tokens: tokens, Directory: dir, Redis: rdb,
		Limiter: ratelimit.NewSlidingWindow(rdb), Revoker: tokencache.NewRevoker(rdb, dcfg.TokenCacheTTL), Logger: tel.Logger},
		deviceflow.Config{SecretKey: dcfg.SecretKey, ConsoleWebURL: dcfg.ConsoleWebURL, ConsoleAPIURL: dcfg.ConsoleAPIURL,
			KnownClientIDs: dcfg.KnownClientIDs, ApprovePerHour: dcfg.ApprovePerHour, TTL: dcfg.TTL})
	if err != nil {
		t.Fatal(err)
	}
	dfSrv := httptest.NewServer(df.Handler())
	t.Cleanup(dfSrv.Close)
	upstream := httptest.NewServer(echoUpstream())
	t.Cleanup(upstream.Close)

	conn, err := grpc.NewClient(authz.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	dfURL, _ := url.Parse(dfSrv.URL)
	upURL, _ := url.Parse(upstream.URL)
	shim, err := envoyshim.New(shimConfig(authv3.NewAuthorizationClient(conn), dfURL, upURL, tel.Logger))
	if err != nil {
		t.Fatal(err)
	}
	shimSrv := httptest.NewServer(shim)
	t.Cleanup(shimSrv.Close)
	return &e2eStack{shim: shimSrv.URL, admin: "http://" + authz.AdminAddr(), spans: spans}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// login runs the device authorization grant with a standard client, approving through the shim with a Dify console
// session (passport cookie plus CSRF token) before the client's first poll.
func (s *e2eStack) login(t *testing.T, label string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conf := &oauth2.Config{ClientID: "difyctl", Endpoint: oauth2.Endpoint{
		DeviceAuthURL: s.shim + "/openapi/v1/oauth/device/code",
		TokenURL:      s.shim + "/openapi/v1/oauth/device/token",
		AuthStyle:     oauth2.AuthStyleInParams,
	}}
	da, err := conf.DeviceAuth(ctx, oauth2.SetAuthURLParam("device_label", label))
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	s.approve(t, da.UserCode)
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("device access token: %v", err)
	}
	if tok.TokenType != "Bearer" || !strings.HasPrefix(tok.AccessToken, "dfoa_") {
		t.Fatalf("token type %q, access token prefix wrong", tok.TokenType)
	}
	return tok.AccessToken
}

func (s *e2eStack) approve(t *testing.T, userCode string) {
	t.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	passport, err := signHS256(e2eSecret, map[string]any{"sub": "Console API Passport", "user_id": demoAccountID, "exp": exp})
	if err != nil {
		t.Fatal(err)
	}
	csrf, err := signHS256(e2eSecret, map[string]any{"sub": demoAccountID, "user_id": demoAccountID, "exp": exp})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.shim+"/openapi/v1/oauth/device/approve",
		strings.NewReader(`{"user_code":"`+userCode+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	req.AddCookie(&http.Cookie{Name: "access_token", Value: passport})
	req.AddCookie(&http.Cookie{Name: "csrf_token", Value: csrf})
	status, body := send(t, req)
	if status != http.StatusOK || !strings.Contains(body, `"approved"`) {
		t.Fatalf("approve: %d %s", status, body)
	}
}

// call sends a request through the shim to a route extauthz checks.
func (s *e2eStack) call(t *testing.T, method, path, token string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.shim+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	s.mu.Lock()
	s.checked++
	s.mu.Unlock()
	return send(t, req)
}

func send(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func echoedHeaders(t *testing.T, body string) map[string]string {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("upstream echo: %v in %q", err, body)
	}
	return e.Headers
}

func errorCode(body string) string {
	var e struct{ Error string }
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error
}

func TestEndToEndThroughTheShim(t *testing.T) {
	t.Parallel()
	s := startE2E(t, nil)

	// Two devices of the demo account, logged in concurrently (each standard client waits one interval before polling).
	var revoked, limited string
	var wg sync.WaitGroup
	wg.Go(func() { revoked = s.login(t, "laptop") })
	wg.Go(func() { limited = s.login(t, "ci runner") })
	wg.Wait()
	if t.Failed() {
		return
	}

	t.Run("app route reaches the upstream with identity headers and authorization", func(t *testing.T) {
		status, body := s.call(t, http.MethodPost, appRunPath, revoked, nil)
		if status != http.StatusOK {
			t.Fatalf("run: %d %s", status, body)
		}
		got := echoedHeaders(t, body)
		for name, want := range identityHeaders {
			if got[name] != want {
				t.Errorf("%s = %q, want %q", name, got[name], want)
			}
		}
		if got["x-authgate-token-id"] == "" {
			t.Error("x-authgate-token-id missing")
		}
		if got["authorization"] != "Bearer "+revoked {
			t.Error("authorization was not forwarded (FORWARD_AUTHORIZATION defaults to true)")
		}
	})

	t.Run("client-supplied x-authgate headers never reach the upstream", func(t *testing.T) {
		status, body := s.call(t, http.MethodPost, appRunPath, revoked, map[string]string{
			"X-Authgate-Account-Id": "99999999-9999-4999-8999-999999999999",
			"X-Authgate-Admin":      "true",
			"X-AUTHGATE-TENANT-ID":  "99999999-9999-4999-8999-999999999999",
		})
		if status != http.StatusOK {
			t.Fatalf("run: %d %s", status, body)
		}
		got := echoedHeaders(t, body)
		if got["x-authgate-account-id"] != demoAccountID || got["x-authgate-tenant-id"] != demoTenantID {
			t.Errorf("smuggled identity reached the upstream: account %q tenant %q", got["x-authgate-account-id"],
				got["x-authgate-tenant-id"])
		}
		if _, ok := got["x-authgate-admin"]; ok {
			t.Error("a client-supplied x-authgate-admin reached the upstream")
		}
	})

	t.Run("device-flow routes pass without a bearer", func(t *testing.T) {
		for _, path := range []string{
			"/.well-known/oauth-authorization-server/openapi/v1",
			"/openapi/v1/.well-known/oauth-authorization-server",
			"/openapi/v1/oauth/device/lookup?user_code=BCDF-GHJK",
			"/device",
		} {
			req, _ := http.NewRequest(http.MethodGet, s.shim+path, nil)
			if status, body := send(t, req); status != http.StatusOK {
				t.Errorf("GET %s: %d %s", path, status, body)
			}
		}
		// The contrast: a deviceflow route that extauthz guards needs one.
		if status, body := s.call(t, http.MethodGet, "/openapi/v1/me", "", nil); status != http.StatusUnauthorized ||
			errorCode(body) != "bearer_required" {
			t.Errorf("GET /me without a bearer: %d %s", status, body)
		}
	})

	t.Run("the 61st call in a minute is 429", func(t *testing.T) {
		for i := 1; i <= 60; i++ {
			if status, body := s.call(t, http.MethodPost, appRunPath, limited, nil); status != http.StatusOK {
				t.Fatalf("call %d: %d %s", i, status, body)
			}
		}
		status, body := s.call(t, http.MethodPost, appRunPath, limited, nil)
		if status != http.StatusTooManyRequests || errorCode(body) != "rate_limited" {
			t.Fatalf("call 61: %d %s", status, body)
		}
	})

	t.Run("self-revoke stops the token", func(t *testing.T) {
		if status, body := s.call(t, http.MethodDelete, "/openapi/v1/account/sessions/self", revoked, nil); status !=
			http.StatusNoContent {
			t.Fatalf("revoke: %d %s", status, body)
		}
		// The contract: within 1 s; bounded a little above it for a loaded machine.
		deadline := time.Now().Add(2 * time.Second)
		for {
			status, body := s.call(t, http.MethodPost, appRunPath, revoked, nil)
			if status == http.StatusUnauthorized && errorCode(body) == "invalid_bearer" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("revoked token still answered %d %s after 2 s", status, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("metrics expose decisions and latency", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.admin+"/metrics", nil)
		status, body := send(t, req)
		if status != http.StatusOK {
			t.Fatalf("/metrics: %d", status)
		}
		for _, series := range []string{
			`authgate_extauthz_checks_total{`, `outcome="allow"`, `route="app_run"`, `outcome="rate_limited"`,
			`outcome="invalid_bearer"`, `outcome="bearer_required"`,
			`authgate_extauthz_check_duration_seconds_bucket{`, `authgate_extauthz_token_cache_total{`,
		} {
			if !strings.Contains(body, series) {
				t.Errorf("/metrics lacks %s", series)
			}
		}
	})

	t.Run("one span per Check with the route and decision", func(t *testing.T) {
		decisions := map[string]int{}
		var checks int
		for _, span := range s.spans.GetSpans() {
			if span.Name != "extauthz.Check" {
				continue
			}
			checks++
			attrs := map[string]string{}
			for _, kv := range span.Attributes {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			decisions[attrs["authgate.route"]+" "+attrs["authgate.decision"]]++
		}
		s.mu.Lock()
		want := s.checked
		s.mu.Unlock()
		if checks != want {
			t.Errorf("%d Check spans for %d checked requests", checks, want)
		}
		for _, d := range []string{"app_run allow", "app_run rate_limited", "app_run invalid_bearer", "me bearer_required",
			"account_session_self_delete allow"} {
			if decisions[d] == 0 {
				t.Errorf("no span for %q; have %v", d, slices.Sorted(maps.Keys(decisions)))
			}
		}
	})
}

func TestEndToEndWithoutForwardingAuthorization(t *testing.T) {
	t.Parallel()
	s := startE2E(t, map[string]string{"FORWARD_AUTHORIZATION": "false"})
	token := s.login(t, "laptop")
	status, body := s.call(t, http.MethodPost, appRunPath, token, nil)
	if status != http.StatusOK {
		t.Fatalf("run: %d %s", status, body)
	}
	got := echoedHeaders(t, body)
	if v, ok := got["authorization"]; ok {
		t.Errorf("authorization reached the upstream (%d bytes) with FORWARD_AUTHORIZATION=false", len(v))
	}
	for name, want := range identityHeaders {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
}
