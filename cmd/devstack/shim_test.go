package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/authgate/authgate/internal/envoyshim"
)

// recordingAuthz allows every Check and counts them.
type recordingAuthz struct {
	mu     sync.Mutex
	checks int
}

func (a *recordingAuthz) Check(context.Context, *authv3.CheckRequest, ...grpc.CallOption) (*authv3.CheckResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks++
	return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

// hostRecorder answers 200 and remembers which upstream host each request went to.
type hostRecorder struct{ hosts []string }

func (h *hostRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.hosts = append(h.hosts, r.URL.Host)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

// TestShimRoutesAsEnvoyDoes checks devstack's shim against envoy/envoy.yaml's routes (deploy/envoy_test.go's
// routeExpectations): the same upstream, and extauthz consulted on the same paths.
func TestShimRoutesAsEnvoyDoes(t *testing.T) {
	const deviceflow, upstream = "deviceflow:8080", "dify-api:5001"
	authz, transport := &recordingAuthz{}, &hostRecorder{}
	cfg := shimConfig(authz, &url.URL{Scheme: "http", Host: deviceflow}, &url.URL{Scheme: "http", Host: upstream},
		slog.New(slog.DiscardHandler))
	cfg.Transport = transport
	shim, err := envoyshim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path    string
		to      string // "" = not proxied
		checked bool
	}{
		{"/openapi/v1/oauth/device/code", deviceflow, false},
		{"/openapi/v1/oauth/device/token", deviceflow, false},
		{"/openapi/v1/oauth/device/sso-complete?sso_assertion=x", deviceflow, false},
		{"/openapi/v1/device/sso-complete?sso_assertion=x", deviceflow, false},
		{"/openapi/v1/oauth/revoke", deviceflow, false},
		{"/.well-known/oauth-authorization-server/openapi/v1", deviceflow, false},
		{"/openapi/v1/.well-known/oauth-authorization-server", deviceflow, false},
		{"/device", deviceflow, false},
		{"/device/sso-complete", deviceflow, false},
		{"/openapi/v1/me", deviceflow, true},
		{"/openapi/v1/account", deviceflow, true},
		{"/openapi/v1/account/sessions?page=2", deviceflow, true},
		{"/openapi/v1/account/sessions/self", deviceflow, true},
		{"/openapi/v1/oauth/authorizations/self", deviceflow, true},
		{"/openapi/v1/apps/3f0c2a8e-0000-4000-8000-000000000001/run", upstream, true},
		{"/openapi/v1/_health", upstream, true},
		{"/openapi/v1/oauth/devices", upstream, true},
		{"/openapi/v1/device/sso-completex", upstream, true},
		{"/openapi/v1/device", upstream, true},
		{"/openapi/v1/oauth/revoke/x", upstream, true},
		{"/openapi/v1/meow", upstream, true},
		{"/openapi/v1/accounts", upstream, true},
		{"/openapi/v1/account/sessionsx", upstream, true},
		{"/openapi/v1/me/x", upstream, true},
		{"/openapi/v1/OAUTH/device/code", upstream, true},
		{"/devices", "", false},
		{"/openapi/v2/apps", "", false},
	}
	smuggled := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/openapi/v1/me", nil)
	req.Header["x_authgate_account_id"] = []string{"smuggled"}
	shim.ServeHTTP(smuggled, req)
	if smuggled.Code != http.StatusBadRequest || authz.checks != 0 || len(transport.hosts) != 0 {
		t.Errorf("x_authgate_account_id: %d, %d checks, proxied %v; want 400 as envoy.yaml's headers_with_underscores_action",
			smuggled.Code, authz.checks, transport.hosts)
	}
	for _, c := range cases {
		checks, proxied := authz.checks, len(transport.hosts)
		rec := httptest.NewRecorder()
		shim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		to := ""
		if len(transport.hosts) > proxied {
			to = transport.hosts[len(transport.hosts)-1]
		}
		if to != c.to || (authz.checks > checks) != c.checked {
			t.Errorf("%s: went to %q, checked %v; want %q, %v (as envoy.yaml routes it)", c.path, to, authz.checks > checks, c.to,
				c.checked)
		}
	}
	// An escaped slash is refused before routing (path_with_escaped_slashes_action: REJECT_REQUEST): it cannot reach a
	// route without a Check. A path outside the routes gets envoy.yaml's JSON 404.
	for path, want := range map[string]int{"/openapi/v1/oauth%2Fdevice/token": 400, "/openapi/v1/oauth/device%2ftoken": 400,
		"/devices": 404} {
		checks, proxied := authz.checks, len(transport.hosts)
		rec := httptest.NewRecorder()
		shim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want || authz.checks != checks || len(transport.hosts) != proxied {
			t.Errorf("%s: %d, checked %v, proxied %v; want %d, neither", path, rec.Code, authz.checks > checks,
				len(transport.hosts) > proxied, want)
		}
		if want == 404 && (rec.Header().Get("Content-Type") != "application/json" || !strings.Contains(rec.Body.String(), "route_not_found")) {
			t.Errorf("%s: %s %q, want envoy.yaml's JSON 404", path, rec.Header().Get("Content-Type"), rec.Body.String())
		}
	}
}
