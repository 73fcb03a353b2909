package envoyshim_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/authgate/authgate/internal/envoyshim"
)

// authzServer is an in-test ext_authz server: decide answers each Check, and every CheckRequest is kept.
type authzServer struct {
	authv3.UnimplementedAuthorizationServer
	decide func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)

	mu       sync.Mutex
	requests []*authv3.CheckRequest
}

func (a *authzServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.mu.Lock()
	a.requests = append(a.requests, req)
	a.mu.Unlock()
	return a.decide(ctx, req)
}

func (a *authzServer) received() []*authv3.CheckRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), a.requests...)
}

func startAuthz(t *testing.T, decide func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)) (*authzServer, authv3.AuthorizationClient) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &authzServer{decide: decide}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, a)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return a, authv3.NewAuthorizationClient(conn)
}

// seen is what an upstream received.
type seen struct {
	Host   string
	URI    string
	Header http.Header
}

// upstream records requests and answers 200 "upstream" with an x-upstream header.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Host: r.Host, URI: r.RequestURI, Header: r.Header.Clone()})
		u.mu.Unlock()
		w.Header().Set("X-Upstream", "yes")
		_, _ = io.WriteString(w, "upstream")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) received() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

func (u *upstream) url(t *testing.T) *url.URL {
	t.Helper()
	parsed, err := url.Parse(u.URL)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func startShim(t *testing.T, cfg envoyshim.Config) *httptest.Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	shim, err := envoyshim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(shim)
	t.Cleanup(srv.Close)
	return srv
}

func allow(opts ...func(*authv3.OkHttpResponse)) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		ok := &authv3.OkHttpResponse{}
		for _, o := range opts {
			o(ok)
		}
		return &authv3.CheckResponse{
			Status:       &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}, nil
	}
}

func header(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action}
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func newRequest(t *testing.T, method, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestCheckRequestLooksLikeEnvoys(t *testing.T) {
	authz, client := startAuthz(t, allow())
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})

	req := newRequest(t, http.MethodPost, shim.URL+"/openapi/v1/apps/a1/run?x=1&y=%2F")
	req.Host = "api.example.test"
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	req.Header.Set("Authorization", "Bearer dfoa_x")
	if resp, _ := do(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}

	got := authz.received()
	if len(got) != 1 {
		t.Fatalf("%d Checks, want 1", len(got))
	}
	h := got[0].GetAttributes().GetRequest().GetHttp()
	wantPath := "/openapi/v1/apps/a1/run?x=1&y=%2F"
	for name, pair := range map[string][2]string{
		"method":     {h.GetMethod(), "POST"},
		"path":       {h.GetPath(), wantPath},
		"host":       {h.GetHost(), "api.example.test"},
		"scheme":     {h.GetScheme(), "http"},
		"protocol":   {h.GetProtocol(), "HTTP/1.1"},
		":authority": {h.GetHeaders()[":authority"], "api.example.test"},
		":method":    {h.GetHeaders()[":method"], "POST"},
		":path":      {h.GetHeaders()[":path"], wantPath},
		":scheme":    {h.GetHeaders()[":scheme"], "http"},
		"x-multi":    {h.GetHeaders()["x-multi"], "one,two"},
		"authz":      {h.GetHeaders()["authorization"], "Bearer dfoa_x"},
		"query":      {h.GetQuery(), ""},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s = %q, want %q", name, pair[0], pair[1])
		}
	}
	for k := range h.GetHeaders() {
		if k != strings.ToLower(k) {
			t.Errorf("header name %q is not lowercase", k)
		}
	}
	if _, ok := h.GetHeaders()["host"]; ok {
		t.Error(`headers has "host"; Envoy carries it as :authority`)
	}
	// The id is Envoy's stream id, a decimal 64-bit number; x-request-id is generated when missing, sent among the
	// headers and forwarded upstream.
	if _, err := strconv.ParseUint(h.GetId(), 10, 64); err != nil {
		t.Errorf("id = %q, want a stream id", h.GetId())
	}
	rid := h.GetHeaders()["x-request-id"]
	if _, err := uuid.Parse(rid); err != nil || rid == h.GetId() {
		t.Errorf("x-request-id = %q, want a UUID of its own (id %q)", rid, h.GetId())
	}
	if ups := up.received(); len(ups) != 1 || ups[0].Header.Get("X-Request-Id") != rid {
		t.Errorf("upstream x-request-id = %q, want %q", ups[0].Header.Get("X-Request-Id"), rid)
	}
	// The body has not arrived when the Check goes out: Envoy sends the bytes received so far, none.
	if h.GetSize() != 0 {
		t.Errorf("size = %d, want 0", h.GetSize())
	}
	src := got[0].GetAttributes().GetSource().GetAddress().GetSocketAddress()
	if src.GetAddress() != "127.0.0.1" || src.GetPortValue() == 0 {
		t.Errorf("source = %v", src)
	}
	if up.received()[0].Host != "api.example.test" || up.received()[0].URI != wantPath {
		t.Errorf("upstream saw host %q uri %q", up.received()[0].Host, up.received()[0].URI)
	}

	// Behind no use_remote_address the connection manager is not at the edge: a client's own x-request-id is kept.
	req = newRequest(t, http.MethodGet, shim.URL+"/x")
	req.Header.Set("X-Request-Id", "client-chosen")
	do(t, req)
	if rid := authz.received()[1].GetAttributes().GetRequest().GetHttp().GetHeaders()["x-request-id"]; rid != "client-chosen" {
		t.Errorf("x-request-id = %q, want the client's", rid)
	}
}

// TestEdgeReplacesClientRequestIDs: at the edge (use_remote_address, as envoy.yaml) Envoy trusts no client's x-request-id
// and sets its own, unless preserve_external_request_id says otherwise; the Check and the upstream see the same one.
func TestEdgeReplacesClientRequestIDs(t *testing.T) {
	for _, preserve := range []bool{false, true} {
		authz, client := startAuthz(t, allow())
		up := startUpstream(t)
		shim := startShim(t, envoyshim.Config{Authz: client, UseRemoteAddress: true, PreserveExternalRequestID: preserve,
			Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
		req := newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me")
		req.Header.Set("X-Request-Id", "client-chosen")
		do(t, req)
		checked := authz.received()[0].GetAttributes().GetRequest().GetHttp().GetHeaders()["x-request-id"]
		forwarded := up.received()[0].Header.Get("X-Request-Id")
		if kept := checked == "client-chosen"; kept != preserve || forwarded != checked {
			t.Errorf("preserve_external_request_id %v: Check saw %q, upstream %q", preserve, checked, forwarded)
		}
	}
}

// TestNonUTF8HeaderValuesAreChecked: a header value that is not UTF-8 (Latin-1, obs-text) reaches the Check with each bad
// byte as "!", as Envoy sends it, instead of failing the Check's encoding and the request with status_on_error; the
// upstream gets the bytes the client sent.
func TestNonUTF8HeaderValuesAreChecked(t *testing.T) {
	authz, client := startAuthz(t, allow())
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
	req := newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me")
	req.Header.Set("X-Note", "caf\xe9 \xff\xfe")
	if resp, body := do(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %q, want the allow's 200", resp.StatusCode, body)
	}
	if got := authz.received()[0].GetAttributes().GetRequest().GetHttp().GetHeaders()["x-note"]; got != "caf! !!" {
		t.Errorf("Check saw x-note %q, want %q", got, "caf! !!")
	}
	if got := up.received()[0].Header.Get("X-Note"); got != "caf\xe9 \xff\xfe" {
		t.Errorf("upstream got x-note %q", got)
	}
}

// TestDirectResponseRoute: a route with a direct_response answers itself, with its headers, and takes no Check when its
// ext_authz is disabled, as envoy.yaml's JSON 404 for every path outside its routes.
func TestDirectResponseRoute(t *testing.T) {
	authz, client := startAuthz(t, allow())
	up := startUpstream(t)
	notFound := &envoyshim.DirectResponse{Status: http.StatusNotFound, Body: `{"error":"route_not_found","message":"no such route"}`,
		Header: http.Header{"Content-Type": {"application/json"}}}
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{
		{Prefix: "/openapi/v1", Upstream: up.url(t)},
		{Prefix: "/", DirectResponse: notFound, AuthzDisabled: true},
	}})
	resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/elsewhere"))
	if resp.StatusCode != http.StatusNotFound || body != notFound.Body || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q (%s)", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if len(authz.received()) != 0 || len(up.received()) != 0 {
		t.Fatal("a direct response was checked or proxied")
	}
}

// TestDenyStatusesPassAsGiven: Envoy answers a denial with the status extauthz gave, whatever it is, and with 403 only
// when none is set.
func TestDenyStatusesPassAsGiven(t *testing.T) {
	for given, want := range map[int]int{0: 403, 200: 200, 401: 401, 418: 418, 429: 429, 503: 503, 600: 600} {
		_, client := startAuthz(t, func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return &authv3.CheckResponse{
				Status: &status.Status{Code: int32(codes.PermissionDenied)},
				HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode(given)}, Body: "denied"}},
			}, nil
		})
		up := startUpstream(t)
		shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
		if resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/x")); resp.StatusCode != want || body != "denied" {
			t.Errorf("deny status %d: client got %d %q, want %d", given, resp.StatusCode, body, want)
		}
		if len(up.received()) != 0 {
			t.Errorf("deny status %d reached the upstream", given)
		}
	}
}

func TestOKHeaderMutations(t *testing.T) {
	_, client := startAuthz(t, allow(func(ok *authv3.OkHttpResponse) {
		ok.Headers = []*corev3.HeaderValueOption{
			header("x-overwrite", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			header("x-added", "fresh", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			header("x-appended", "second", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
			header("x-if-absent", "ignored", corev3.HeaderValueOption_ADD_IF_ABSENT),
			header("x-absent-new", "added", corev3.HeaderValueOption_ADD_IF_ABSENT),
			header("x-only-if-exists", "ignored", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			{Header: &corev3.HeaderValue{Key: "x-legacy", Value: "legacy"}, Append: wrapperspb.Bool(false)},
			{Header: &corev3.HeaderValue{Key: "x-legacy-append", Value: "b"}, Append: wrapperspb.Bool(true)},
			{Header: &corev3.HeaderValue{Key: "x-legacy-new", Value: "n"}, Append: wrapperspb.Bool(true)},
			{Header: &corev3.HeaderValue{Key: "x-bad-action", Value: "set"}, AppendAction: 42},
			header("x-empty", "", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			header(":authority", "evil.example", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}
		ok.HeadersToRemove = []string{"authorization", "x-authgate-tenant-id"}
		ok.ResponseHeadersToAdd = []*corev3.HeaderValueOption{
			header("ratelimit-limit", "60", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}
		ok.QueryParametersToSet = []*corev3.QueryParameter{{Key: "q", Value: "set"}}
		ok.QueryParametersToRemove = []string{"drop"}
	}))
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})

	req := newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me?drop=1&q=orig")
	req.Header.Set("X-Overwrite", "old")
	req.Header.Set("X-Appended", "first")
	req.Header.Set("X-If-Absent", "client")
	req.Header.Set("X-Legacy", "client")
	req.Header.Set("X-Legacy-Append", "a")
	req.Header.Set("X-Bad-Action", "client")
	req.Header.Set("Authorization", "Bearer secret")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK || body != "upstream" {
		t.Fatalf("response = %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Ratelimit-Limit"); got != "60" {
		t.Errorf("client response ratelimit-limit = %q", got)
	}
	if resp.Header.Get("X-Upstream") != "yes" {
		t.Error("upstream response headers lost")
	}

	ups := up.received()
	if len(ups) != 1 {
		t.Fatalf("upstream got %d requests", len(ups))
	}
	h := ups[0].Header
	check := func(name string, want []string) {
		t.Helper()
		got := h.Values(name)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}
	check("X-Overwrite", []string{"new"})
	check("X-Added", []string{"fresh"})
	check("X-Appended", []string{"first", "second"})
	check("X-If-Absent", []string{"client"})
	check("X-Absent-New", []string{"added"})
	check("X-Only-If-Exists", nil)
	check("X-Legacy", []string{"legacy"})
	check("X-Legacy-Append", []string{"a,b"})
	check("X-Legacy-New", []string{"n"})
	check("X-Bad-Action", []string{"set"})
	check("X-Empty", nil)
	check("Authorization", nil)
	if ups[0].Host == "evil.example" {
		t.Error("ext_authz rewrote :authority")
	}
	if q, _ := url.ParseQuery(strings.SplitN(ups[0].URI, "?", 2)[1]); q.Get("q") != "set" || q.Has("drop") {
		t.Errorf("upstream query = %q", ups[0].URI)
	}
}

func TestDeniedResponsePassesThrough(t *testing.T) {
	_, client := startAuthz(t, func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.ResourceExhausted)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
				Headers: []*corev3.HeaderValueOption{
					header("content-type", "application/json", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
					header("retry-after", "7", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				},
				Body: `{"error":"rate_limited","message":"slow down","retry_after_ms":7000}`,
			}},
		}, nil
	})
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
	resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me"))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" ||
		resp.Header.Get("Content-Type") != "application/json" ||
		body != `{"error":"rate_limited","message":"slow down","retry_after_ms":7000}` {
		t.Fatalf("client got %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if n := len(up.received()); n != 0 {
		t.Fatalf("denied request reached the upstream %d times", n)
	}
}

func TestDeniedLocalReplyHeaders(t *testing.T) {
	_, client := startAuthz(t, func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.Unauthenticated)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{
					header("set-cookie", "a=1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
					header("set-cookie", "b=2", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				},
				Body: "no",
			}},
		}, nil
	})
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
	resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/x"))
	if resp.StatusCode != http.StatusUnauthorized || body != "no" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("client got %d %q content-type %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2 {
		t.Fatalf("set-cookie = %q, want both", got)
	}
}

func TestErrorResponseUsesStatusOnError(t *testing.T) {
	_, client := startAuthz(t, func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status:       &status.Status{Code: int32(codes.Unavailable)},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{Body: "down"}},
		}, nil
	})
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
	resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/x"))
	if resp.StatusCode != http.StatusServiceUnavailable || body != "down" {
		t.Fatalf("client got %d %q", resp.StatusCode, body)
	}
	if len(up.received()) != 0 {
		t.Fatal("errored request reached the upstream")
	}
}

func TestDeniedWithoutHTTPResponseIs403(t *testing.T) {
	_, client := startAuthz(t, func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)}}, nil
	})
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
	if resp, _ := do(t, newRequest(t, http.MethodGet, shim.URL+"/x")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status = %d, want 403", resp.StatusCode)
	}
	if len(up.received()) != 0 {
		t.Fatal("denied request reached the upstream")
	}
}

func TestCheckFailureFailsClosed(t *testing.T) {
	cases := map[string]struct {
		decide func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		status int // StatusOnError; 0 = default
		want   int
	}{
		"timeout": {
			decide: func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				<-ctx.Done() // never answers in time
				return nil, ctx.Err()
			},
			want: http.StatusServiceUnavailable,
		},
		"grpc error": {
			decide: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return nil, grpcstatus.Error(codes.Internal, "boom")
			},
			want: http.StatusServiceUnavailable,
		},
		"custom status_on_error": {
			decide: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return nil, grpcstatus.Error(codes.Unavailable, "down")
			},
			status: http.StatusForbidden,
			want:   http.StatusForbidden,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, client := startAuthz(t, tc.decide)
			up := startUpstream(t)
			shim := startShim(t, envoyshim.Config{
				Authz: client, Timeout: 50 * time.Millisecond, StatusOnError: tc.status,
				Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}},
			})
			resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me"))
			if resp.StatusCode != tc.want || body != "" {
				t.Fatalf("client got %d %q, want %d with Envoy's empty local reply", resp.StatusCode, body, tc.want)
			}
			if len(up.received()) != 0 {
				t.Fatal("request reached the upstream without a decision")
			}
		})
	}
}

func TestDisabledRouteSkipsCheck(t *testing.T) {
	authz, client := startAuthz(t, func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return nil, grpcstatus.Error(codes.Internal, "must not be called")
	})
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{
		Authz:                      client,
		StripRequestHeaderPrefixes: []string{"x-authgate-"},
		Routes: []envoyshim.Route{
			{Prefix: "/openapi/v1/oauth/device/", Upstream: up.url(t), AuthzDisabled: true},
			{Prefix: "/", Upstream: up.url(t)},
		},
	})
	req := newRequest(t, http.MethodPost, shim.URL+"/openapi/v1/oauth/device/code")
	req.Header.Set("X-Authgate-Account-Id", "smuggled")
	if resp, body := do(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("disabled route = %d %q", resp.StatusCode, body)
	}
	if n := len(authz.received()); n != 0 {
		t.Fatalf("Check called %d times for a disabled route", n)
	}
	ups := up.received()
	if len(ups) != 1 || ups[0].Header.Get("X-Authgate-Account-Id") != "" {
		t.Fatalf("upstream got %d requests, x-authgate-account-id %q", len(ups), ups[0].Header.Get("X-Authgate-Account-Id"))
	}
	// Any other path is still checked (and here fails closed).
	if resp, _ := do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me")); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("checked route = %d, want 503", resp.StatusCode)
	}
}

func TestClientAuthgateHeadersNeverReachUpstream(t *testing.T) {
	authz, client := startAuthz(t, allow(func(ok *authv3.OkHttpResponse) {
		ok.Headers = []*corev3.HeaderValueOption{
			header("x-authgate-subject-email", "real@example.test", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		}
	}))
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{
		Authz:                      client,
		StripRequestHeaderPrefixes: []string{"x-authgate-"},
		Routes:                     []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}},
	})
	req := newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me")
	req.Header.Set("X-Authgate-Subject-Email", "evil@example.test")
	req.Header.Set("X-AUTHGATE-Tenant-Id", "smuggled-tenant")
	req.Header.Set("X-Other", "kept")
	do(t, req)

	for k := range authz.received()[0].GetAttributes().GetRequest().GetHttp().GetHeaders() {
		if strings.HasPrefix(k, "x-authgate-") {
			t.Errorf("ext_authz saw client header %q", k)
		}
	}
	h := up.received()[0].Header
	if got := h.Values("X-Authgate-Subject-Email"); len(got) != 1 || got[0] != "real@example.test" {
		t.Errorf("upstream x-authgate-subject-email = %q", got)
	}
	if got := h.Get("X-Authgate-Tenant-Id"); got != "" {
		t.Errorf("upstream x-authgate-tenant-id = %q", got)
	}
	if h.Get("X-Other") != "kept" {
		t.Error("unrelated header dropped")
	}
}

func TestHeadersWithUnderscoresAreRejected(t *testing.T) {
	authz, client := startAuthz(t, allow())
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, RejectHeadersWithUnderscores: true,
		Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
	req := newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me")
	req.Header["x_authgate_account_id"] = []string{"smuggled"}
	if resp, _ := do(t, req); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("underscore header = %d, want 400", resp.StatusCode)
	}
	if len(authz.received()) != 0 || len(up.received()) != 0 {
		t.Fatal("a rejected request reached ext_authz or the upstream")
	}
	if resp, _ := do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me")); resp.StatusCode != http.StatusOK {
		t.Fatalf("plain request = %d", resp.StatusCode)
	}
}

func TestRoutingAndNoRoute(t *testing.T) {
	authz, client := startAuthz(t, allow())
	api, device := startUpstream(t), startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{
		{Prefix: "/openapi/v1/", Upstream: api.url(t)},
		{Prefix: "/openapi/v1/oauth/device/", Upstream: device.url(t)},
	}})
	do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/oauth/device/lookup?user_code=A"))
	do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me"))
	if len(device.received()) != 1 || len(api.received()) != 1 {
		t.Fatalf("device got %d, api got %d; want 1 each (longest prefix wins)", len(device.received()), len(api.received()))
	}
	resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/elsewhere"))
	if resp.StatusCode != http.StatusNotFound || body != "" {
		t.Fatalf("unrouted = %d %q", resp.StatusCode, body)
	}
	if n := len(authz.received()); n != 2 {
		t.Fatalf("%d Checks, want 2 (Envoy skips ext_authz when no route matches)", n)
	}
}

// A prefix without a trailing slash matches as Envoy's path_separated_prefix, and a Path exactly; the Check is skipped only
// on the route that disables it: a path that merely starts like a device-flow route is routed, and checked, as any other.
func TestRouteMatchingAndPerRouteDisable(t *testing.T) {
	authz, client := startAuthz(t, allow())
	api, device := startUpstream(t), startUpstream(t)
	shim := startShim(t, envoyshim.Config{Authz: client,
		Routes: []envoyshim.Route{
			{Prefix: "/openapi/v1", Upstream: api.url(t)},
			{Prefix: "/openapi/v1/oauth/device", Upstream: device.url(t), AuthzDisabled: true},
			{Path: "/openapi/v1/oauth/revoke", Upstream: device.url(t), AuthzDisabled: true},
			{Path: "/openapi/v1/me", Upstream: device.url(t)},
		}})
	cases := []struct {
		path            string
		status          int
		toAPI, toDevice int
		checks          int
	}{
		{"/openapi/v1/oauth/device/code", 200, 0, 1, 0},
		{"/openapi/v1/oauth/device", 200, 0, 1, 0},
		{"/openapi/v1/oauth/devices", 200, 1, 0, 1},
		{"/openapi/v1/oauth/device-code", 200, 1, 0, 1},
		{"/openapi/v1", 200, 1, 0, 1},
		{"/openapi/v1x", 404, 0, 0, 0},
		{"/openapi/v1/oauth/revoke", 200, 0, 1, 0},
		{"/openapi/v1/oauth/revoke/x", 200, 1, 0, 1},
		{"/openapi/v1/me", 200, 0, 1, 1},
		{"/openapi/v1/me/x", 200, 1, 0, 1},
	}
	for _, c := range cases {
		a, d, n := len(api.received()), len(device.received()), len(authz.received())
		resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+c.path))
		got := []int{resp.StatusCode, len(api.received()) - a, len(device.received()) - d, len(authz.received()) - n}
		if want := []int{c.status, c.toAPI, c.toDevice, c.checks}; !slices.Equal(got, want) {
			t.Errorf("%s: status, to api, to device, checks = %v, want %v (%q)", c.path, got, want, body)
		}
	}
}

func TestNormalizeAndRemoteAddress(t *testing.T) {
	authz, client := startAuthz(t, allow())
	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{
		Authz: client, MergeSlashes: true, NormalizePath: true, UseRemoteAddress: true,
		Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}},
	})
	req := newRequest(t, http.MethodGet, shim.URL+"/x")
	req.URL.Opaque = "//" + req.URL.Host + "/openapi//v1/./apps/%2e%2e/me/../me?a=1"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	do(t, req)
	h := authz.received()[0].GetAttributes().GetRequest().GetHttp()
	if h.GetPath() != "/openapi/v1/me?a=1" {
		t.Errorf("normalized path = %q", h.GetPath())
	}
	if got := h.GetHeaders()["x-forwarded-for"]; got != "203.0.113.9, 127.0.0.1" {
		t.Errorf("x-forwarded-for = %q", got)
	}
	if got := h.GetHeaders()["x-forwarded-proto"]; got != "http" {
		t.Errorf("x-forwarded-proto = %q", got)
	}
	ups := up.received()
	if ups[0].URI != "/openapi/v1/me?a=1" || ups[0].Header.Get("X-Forwarded-For") != "203.0.113.9, 127.0.0.1" {
		t.Errorf("upstream saw %q with x-forwarded-for %q", ups[0].URI, ups[0].Header.Get("X-Forwarded-For"))
	}
}

func TestNewValidates(t *testing.T) {
	_, client := startAuthz(t, allow())
	for name, cfg := range map[string]envoyshim.Config{
		"no authz":    {Routes: []envoyshim.Route{{Prefix: "/", Upstream: &url.URL{Scheme: "http", Host: "x"}}}},
		"no routes":   {Authz: client},
		"relative up": {Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: &url.URL{Path: "/x"}}}},
		"no match":    {Authz: client, Routes: []envoyshim.Route{{Upstream: &url.URL{Scheme: "http", Host: "x"}}}},
		"path and prefix": {Authz: client, Routes: []envoyshim.Route{
			{Path: "/a", Prefix: "/", Upstream: &url.URL{Scheme: "http", Host: "x"}}}},
		"upstream path": {Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: &url.URL{Scheme: "http", Host: "x", Path: "/api"}}}},
		"direct response without status": {Authz: client, Routes: []envoyshim.Route{
			{Prefix: "/", DirectResponse: &envoyshim.DirectResponse{Body: "x"}}}},
		"direct response and upstream": {Authz: client, Routes: []envoyshim.Route{
			{Prefix: "/", DirectResponse: &envoyshim.DirectResponse{Status: 404}, Upstream: &url.URL{Scheme: "http", Host: "x"}}}},
	} {
		if _, err := envoyshim.New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestUpstreamDownIs503(t *testing.T) {
	_, client := startAuthz(t, allow())
	up := startUpstream(t)
	target := up.url(t)
	up.Close()
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: target}}})
	resp, body := do(t, newRequest(t, http.MethodGet, shim.URL+"/openapi/v1/me"))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "upstream connect error") {
		t.Fatalf("client got %d %q", resp.StatusCode, body)
	}
}
