package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"

	"github.com/authgate/authgate/internal/config"
)

// authgateHeaders are the identity headers extauthz sets on an allowed request (docs/architecture.md). A client must never be
// able to send one of them to an upstream.
var authgateHeaders = []string{
	"x-authgate-subject-type", "x-authgate-subject-email", "x-authgate-subject-issuer", "x-authgate-account-id",
	"x-authgate-token-id", "x-authgate-client-id", "x-authgate-scopes", "x-authgate-tenant-id", "x-authgate-app-id",
}

const (
	extAuthzFilter       = "envoy.filters.http.ext_authz"
	headerMutationFilter = "envoy.filters.http.header_mutation"
)

func loadBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	var b bootstrapv3.Bootstrap
	decodeProtoYAML(t, "envoy/envoy.yaml", repoFile(t, "envoy/envoy.yaml"), &b)
	return &b
}

// TestEnvoyBootstrapIsValid loads envoy.yaml as Envoy would: the bootstrap schema and its validation rules, then every
// typed_config, which ValidateAll does not descend into.
func TestEnvoyBootstrapIsValid(t *testing.T) {
	b := loadBootstrap(t)
	validateProto(t, "bootstrap", b)

	typed := map[protoreflect.FullName]int{}
	forEachAny(t, b.ProtoReflect(), func(path string, m proto.Message) {
		typed[m.ProtoReflect().Descriptor().FullName()]++
		validateProto(t, path, m)
	})
	for _, want := range []protoreflect.FullName{
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
		"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
		"envoy.extensions.filters.http.router.v3.Router",
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
		"envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
		"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
		"envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
	} {
		if typed[want] == 0 {
			t.Errorf("no %s among the typed configs %v", want, typed)
		}
	}
}

// forEachAny unpacks every google.protobuf.Any below m (depth first, including inside unpacked ones) and passes it to visit.
func forEachAny(t *testing.T, m protoreflect.Message, visit func(path string, m proto.Message)) {
	t.Helper()
	var walk func(path string, m protoreflect.Message)
	walk = func(path string, m protoreflect.Message) {
		if a, ok := m.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Errorf("%s: %s: %v (is its package imported?)", path, a.GetTypeUrl(), err)
				return
			}
			path += "<" + string(inner.ProtoReflect().Descriptor().Name()) + ">"
			visit(path, inner)
			walk(path, inner.ProtoReflect())
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + "." + string(fd.Name())
			switch {
			case fd.IsMap():
				if fd.MapValue().Message() != nil {
					v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
						walk(p+"["+k.String()+"]", mv.Message())
						return true
					})
				}
			case fd.IsList():
				if fd.Message() != nil {
					for i := 0; i < v.List().Len(); i++ {
						walk(p, v.List().Get(i).Message())
					}
				}
			case fd.Message() != nil:
				walk(p, v.Message())
			}
			return true
		})
	}
	walk("bootstrap", m)
}

func unpack[T proto.Message](t *testing.T, what string, a *anypb.Any) T {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	typed, ok := m.(T)
	if !ok {
		t.Fatalf("%s is a %T", what, m)
	}
	return typed
}

// unpackIfType unpacks a into T when it holds one.
func unpackIfType[T proto.Message](t *testing.T, a *anypb.Any) (T, bool) {
	t.Helper()
	var zero T
	if a.MessageName() != zero.ProtoReflect().Descriptor().FullName() {
		return zero, false
	}
	return unpack[T](t, string(a.MessageName()), a), true
}

// publicHCM is the HTTP connection manager of the listener clients reach.
func publicHCM(t *testing.T, b *bootstrapv3.Bootstrap) *hcmv3.HttpConnectionManager {
	t.Helper()
	var found *listenerv3.Listener
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() == "public" {
			found = l
		}
	}
	if found == nil || len(found.GetFilterChains()) != 1 || len(found.GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatal("envoy.yaml needs one listener named public with one filter chain holding the HTTP connection manager")
	}
	return unpack[*hcmv3.HttpConnectionManager](t, "public listener", found.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
}

func httpFilterIndex(hcm *hcmv3.HttpConnectionManager, name string) int {
	for i, f := range hcm.GetHttpFilters() {
		if f.GetName() == name {
			return i
		}
	}
	return -1
}

func TestEnvoyExtAuthzFailsClosed(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	i := httpFilterIndex(hcm, extAuthzFilter)
	if i < 0 {
		t.Fatal("no ext_authz filter on the public listener")
	}
	if last := hcm.GetHttpFilters()[len(hcm.GetHttpFilters())-1].GetName(); last != "envoy.filters.http.router" || i == len(hcm.GetHttpFilters())-1 {
		t.Errorf("the router must be the last filter, after ext_authz; last is %s", last)
	}
	ea := unpack[*extauthzv3.ExtAuthz](t, "ext_authz", hcm.GetHttpFilters()[i].GetTypedConfig())

	if ea.GetFailureModeAllow() {
		t.Error("failure_mode_allow must be false: an auth decision that cannot be made is a deny")
	}
	if got := ea.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("status_on_error = %v, want ServiceUnavailable (503)", got)
	}
	if ea.GetTransportApiVersion().String() != "V3" {
		t.Errorf("transport_api_version = %v, want V3", ea.GetTransportApiVersion())
	}
	if ea.GetIncludePeerCertificate() {
		t.Error("include_peer_certificate must be off")
	}
	if ea.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "extauthz" {
		t.Errorf("ext_authz calls cluster %q, want extauthz", ea.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	}

	// Settings that would let a request past extauthz, or keep extauthz from seeing what it decides on.
	if f := hcm.GetHttpFilters()[i]; f.GetDisabled() || f.GetIsOptional() {
		t.Error("the ext_authz filter must be neither disabled by default nor optional")
	}
	if ea.GetShadowMode() {
		t.Error("shadow_mode must be off: Envoy would let denied requests through")
	}
	if ea.GetFilterEnabled() != nil || ea.GetFilterEnabledMetadata() != nil {
		t.Error("filter_enabled/filter_enabled_metadata would skip the Check for some requests")
	}
	if ea.GetHttpService() != nil {
		t.Error("http_service: extauthz is a gRPC server, and allowed_upstream_headers would drop the identity headers")
	}
	if ea.GetDecoderHeaderMutationRules() != nil {
		t.Error("decoder_header_mutation_rules could refuse the x-authgate-* headers extauthz sets")
	}
	if body := ea.GetWithRequestBody(); body != nil && (body.GetMaxRequestBytes() == 0 || body.GetMaxRequestBytes() > 64<<10) {
		t.Errorf("with_request_body: extauthz decides on headers; a body, if sent at all, must be bounded (max_request_bytes %d)",
			body.GetMaxRequestBytes())
	}
	// Headers extauthz decides on: the bearer, the client address for the invalid-bearer budget, CORS preflight, the
	// request id and trace context.
	for _, h := range []string{"authorization", "x-forwarded-for", "origin", "access-control-request-method", "x-request-id", "traceparent"} {
		if allowed := ea.GetAllowedHeaders(); allowed != nil && !listMatches(t, allowed.GetPatterns(), h) {
			t.Errorf("allowed_headers does not let %s reach extauthz", h)
		}
		if listMatches(t, ea.GetDisallowedHeaders().GetPatterns(), h) {
			t.Errorf("disallowed_headers keeps %s from extauthz", h)
		}
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			cfg, ok := r.GetTypedPerFilterConfig()[extAuthzFilter]
			if !ok {
				continue
			}
			per := unpack[*extauthzv3.ExtAuthzPerRoute](t, "route "+r.GetName(), cfg)
			if !proto.Equal(per, &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}) {
				t.Errorf("route %s: ExtAuthzPerRoute may only disable the Check, got %v", r.GetName(), per)
			}
		}
	}

	timeout := ea.GetGrpcService().GetTimeout()
	if timeout == nil {
		t.Fatal("the ext_authz grpc_service needs an explicit timeout")
	}
	if d, check := timeout.AsDuration(), extauthzDefaults(t).CheckTimeout; d > 200*time.Millisecond || d <= check {
		t.Errorf("ext_authz timeout %v: want at most 200 ms and above extauthz's CHECK_TIMEOUT default %v, so extauthz answers "+
			"before Envoy gives up", d, check)
	}
}

// extauthzDefaults is extauthz's configuration with nothing but the required variables set.
func extauthzDefaults(t *testing.T) config.Extauthz {
	t.Helper()
	cfg, _, err := config.LoadExtauthz(func(name string) (string, bool) {
		v, ok := map[string]string{"DATABASE_URL": "postgres://db/dify", "REDIS_URL": "redis://redis:6379/0"}[name]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestEnvoyCanonicalisesPaths(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	if !hcm.GetNormalizePath().GetValue() {
		t.Error("normalize_path must be true")
	}
	if !hcm.GetMergeSlashes() {
		t.Error("merge_slashes must be true")
	}
	if !hcm.GetUseRemoteAddress().GetValue() {
		t.Error("use_remote_address must be true, so a client cannot choose the address it is rate-limited by")
	}
	if a := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a != corev3.HttpProtocolOptions_REJECT_REQUEST && a != corev3.HttpProtocolOptions_DROP_HEADER {
		t.Errorf("headers_with_underscores_action = %v: a WSGI upstream reads x_authgate_account_id as x-authgate-account-id", a)
	}
	switch a := hcm.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
	default:
		t.Errorf("path_with_escaped_slashes_action = %v: an escaped slash must be rejected or unescaped and redirected", a)
	}
}

// TestEnvoyStripsClientIdentityHeaders checks that no x-authgate-* header a client sends reaches any upstream: a header_mutation
// filter before ext_authz removes them on every route. A route-level request_headers_to_remove would not do: the router applies
// it after ext_authz, so it would also strip the identity extauthz sets.
func TestEnvoyStripsClientIdentityHeaders(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	mi, ai := httpFilterIndex(hcm, headerMutationFilter), httpFilterIndex(hcm, extAuthzFilter)
	if mi < 0 || mi > ai {
		t.Fatalf("the header_mutation filter must come before ext_authz (positions %d, %d)", mi, ai)
	}
	hm := unpack[*headermutationv3.HeaderMutation](t, "header_mutation", hcm.GetHttpFilters()[mi].GetTypedConfig())
	removed := func(header string) bool {
		for _, m := range hm.GetMutations().GetRequestMutations() {
			if m.GetRemove() == header || (m.GetRemoveOnMatch() != nil && stringMatches(t, m.GetRemoveOnMatch().GetKeyMatcher(), header)) {
				return true
			}
		}
		return false
	}
	for _, h := range authgateHeaders {
		if !removed(h) {
			t.Errorf("%s sent by a client is not removed", h)
		}
	}
	for _, h := range []string{"authorization", "x-request-id", "cookie", "x-forwarded-for"} {
		if removed(h) {
			t.Errorf("%s is removed but must reach extauthz and the upstream", h)
		}
	}

	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if _, ok := r.GetTypedPerFilterConfig()[headerMutationFilter]; ok {
				t.Errorf("route %s overrides the header_mutation filter", r.GetName())
			}
			if !extAuthzDisabled(t, r) {
				for _, h := range r.GetRequestHeadersToRemove() {
					if strings.HasPrefix(strings.ToLower(h), "x-authgate-") {
						t.Errorf("route %s removes %s after ext_authz, stripping the identity extauthz sets", r.GetName(), h)
					}
				}
			}
		}
		if _, ok := vh.GetTypedPerFilterConfig()[headerMutationFilter]; ok {
			t.Errorf("virtual host %s overrides the header_mutation filter", vh.GetName())
		}
	}
}

// TestEnvoyAccessLogKeepsSecretsOut checks that the access log records no credential: no Authorization or Cookie header and no
// query string (sso-complete carries an SSO assertion there).
func TestEnvoyAccessLogKeepsSecretsOut(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	if len(hcm.GetAccessLog()) == 0 {
		t.Fatal("no access log on the public listener")
	}
	for _, al := range hcm.GetAccessLog() {
		stdout, ok := unpackIfType[*streamv3.StdoutAccessLog](t, al.GetTypedConfig())
		if !ok {
			t.Fatalf("access log %s: the test understands the stdout logger only", al.GetName())
		}
		format, err := protojson.Marshal(stdout.GetLogFormat())
		if err != nil {
			t.Fatal(err)
		}
		const pathWithoutQuery = "%req_without_query(:path)%"
		lower := strings.ToLower(string(format))
		if !strings.Contains(lower, pathWithoutQuery) {
			t.Errorf("access log %s should log the path without its query", al.GetName())
		}
		rest := strings.ReplaceAll(lower, pathWithoutQuery, "")
		for _, leak := range []string{"authorization", "cookie", "(:path)", "%path", "x-envoy-original-path"} {
			if strings.Contains(rest, leak) {
				t.Errorf("access log %s logs %s: %s", al.GetName(), leak, format)
			}
		}
	}
}

func listMatches(t *testing.T, patterns []*matcherv3.StringMatcher, s string) bool {
	t.Helper()
	for _, m := range patterns {
		if stringMatches(t, m, s) {
			return true
		}
	}
	return false
}

func stringMatches(t *testing.T, m *matcherv3.StringMatcher, s string) bool {
	t.Helper()
	pattern := m.GetPrefix() + m.GetExact() + m.GetSuffix() + m.GetContains()
	if m.GetIgnoreCase() {
		s, pattern = strings.ToLower(s), strings.ToLower(pattern)
	}
	switch m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, pattern)
	case *matcherv3.StringMatcher_Exact:
		return s == pattern
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, pattern)
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(s, pattern)
	}
	t.Fatalf("matcher %v: the test understands prefix, exact, suffix and contains", m)
	return false
}

func extAuthzDisabled(t *testing.T, r *routev3.Route) bool {
	t.Helper()
	cfg, ok := r.GetTypedPerFilterConfig()[extAuthzFilter]
	if !ok {
		return false
	}
	return unpack[*extauthzv3.ExtAuthzPerRoute](t, "route "+r.GetName(), cfg).GetDisabled()
}

// matchRoute picks the route Envoy would for a normalised path: the first whose path matcher matches.
func matchRoute(t *testing.T, vh *routev3.VirtualHost, path string) *routev3.Route {
	t.Helper()
	path, _, _ = strings.Cut(path, "?")
	for _, r := range vh.GetRoutes() {
		m := r.GetMatch()
		if len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 || (m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()) {
			t.Fatalf("route %s: the test understands only case-sensitive path matches", r.GetName())
		}
		var hit bool
		switch p := m.GetPathSpecifier().(type) {
		case *routev3.RouteMatch_Path:
			hit = path == p.Path
		case *routev3.RouteMatch_Prefix:
			hit = strings.HasPrefix(path, p.Prefix)
		case *routev3.RouteMatch_PathSeparatedPrefix:
			hit = path == p.PathSeparatedPrefix || strings.HasPrefix(path, p.PathSeparatedPrefix+"/")
		default:
			t.Fatalf("route %s: unexpected path matcher %T", r.GetName(), p)
		}
		if hit {
			return r
		}
	}
	return nil
}

// Upstreams, as the clusters of envoy.yaml name them.
const (
	deviceflow = "deviceflow"
	difyAPI    = "dify_api"
	nowhere    = "" // answered by the proxy itself
)

// routeExpectations say where a request goes and whether extauthz checks it first (docs/architecture.md, docs/operations.md). Both envoy.yaml and the
// Istio resources must agree with them.
var routeExpectations = []struct {
	path      string
	cluster   string
	checked   bool // extauthz decides before the request goes upstream
	rationale string
}{
	// Routes that deviceflow authenticates itself.
	{"/openapi/v1/oauth/device", deviceflow, false, "the device-flow prefix itself"},
	{"/openapi/v1/oauth/device/code", deviceflow, false, "device code"},
	{"/openapi/v1/oauth/device/token", deviceflow, false, "token poll"},
	{"/openapi/v1/oauth/device/lookup?user_code=ABCD-EFGH", deviceflow, false, "lookup"},
	{"/openapi/v1/oauth/device/approve", deviceflow, false, "approve (console session)"},
	{"/openapi/v1/oauth/device/deny", deviceflow, false, "deny"},
	{"/openapi/v1/oauth/device/sso-initiate", deviceflow, false, "sso"},
	{"/openapi/v1/oauth/device/sso-complete", deviceflow, false, "sso"},
	{"/openapi/v1/device/sso-complete?sso_assertion=x", deviceflow, false, "sso, its second mount: never to Dify"},
	{"/openapi/v1/oauth/device/approval-context", deviceflow, false, "grant cookie"},
	{"/openapi/v1/oauth/device/approve-external", deviceflow, false, "grant cookie"},
	{"/openapi/v1/oauth/device/deny-external", deviceflow, false, "grant cookie"},
	{"/openapi/v1/oauth/device/github/start", deviceflow, false, "GitHub sign-in, started by the page"},
	{"/openapi/v1/oauth/device/github/context", deviceflow, false, "GitHub session cookie"},
	{"/openapi/v1/oauth/revoke", deviceflow, false, "RFC 7009, client authenticated by deviceflow"},
	{"/.well-known/oauth-authorization-server/openapi/v1", deviceflow, false, "RFC 8414 metadata"},
	{"/openapi/v1/.well-known/oauth-authorization-server", deviceflow, false, "RFC 8414 metadata"},
	{"/device", deviceflow, false, "approval page"},
	{"/device/sso-complete", deviceflow, false, "under the page's prefix (deviceflow answers 404)"},
	{"/device/github/callback?code=x&state=y", deviceflow, false, "GitHub's redirect back, under the page's prefix"},
	// Device-flow bearer routes: served by deviceflow, still checked (rate limit, revocation within 1 s).
	{"/openapi/v1/me", deviceflow, true, "bearer"},
	{"/openapi/v1/account", deviceflow, true, "bearer"},
	{"/openapi/v1/account/sessions?page=2", deviceflow, true, "bearer"},
	{"/openapi/v1/account/sessions/self", deviceflow, true, "bearer"},
	{"/openapi/v1/account/sessions/3f0c2a8e-0000-4000-8000-000000000001", deviceflow, true, "bearer"},
	{"/openapi/v1/oauth/authorizations/self", deviceflow, true, "bearer"},
	// Everything else under /openapi/v1 goes to Dify behind extauthz, including paths that merely start like a
	// device-flow route.
	{"/openapi/v1", difyAPI, true, "the OpenAPI prefix itself"},
	{"/openapi/v1/apps/3f0c2a8e-0000-4000-8000-000000000001/run", difyAPI, true, "app run"},
	{"/openapi/v1/apps?workspace_id=3f0c2a8e-0000-4000-8000-000000000001", difyAPI, true, "apps"},
	{"/openapi/v1/workspaces", difyAPI, true, "workspaces"},
	{"/openapi/v1/permitted-external-apps", difyAPI, true, "EE"},
	{"/openapi/v1/_health", difyAPI, true, "extauthz allows it without a bearer"},
	{"/openapi/v1/oauth/devices", difyAPI, true, "not the device prefix"},
	{"/openapi/v1/device/sso-completex", difyAPI, true, "not sso-complete"},
	{"/openapi/v1/device", difyAPI, true, "only sso-complete is deviceflow's under /openapi/v1/device"},
	{"/openapi/v1/oauth/revoke/x", difyAPI, true, "not the revoke route"},
	{"/openapi/v1/meow", difyAPI, true, "not /me"},
	{"/openapi/v1/accounts", difyAPI, true, "not /account"},
	{"/openapi/v1/account/sessionsx", difyAPI, true, "not /account/sessions"},
	{"/openapi/v1/OAUTH/device/code", difyAPI, true, "matching is case-sensitive"},
	// Outside the OpenAPI: nothing is proxied.
	{"/devices", nowhere, false, "not the page"},
	{"/openapi/v2/apps", nowhere, false, "other prefix"},
	{"/console/api/apps", nowhere, false, "console API is not fronted here"},
}

func TestEnvoyRoutes(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	vhs := hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhs) != 1 || len(vhs[0].GetDomains()) != 1 || vhs[0].GetDomains()[0] != "*" {
		t.Fatal("want one virtual host for every domain")
	}
	vh := vhs[0]
	if _, ok := vh.GetTypedPerFilterConfig()[extAuthzFilter]; ok {
		t.Fatal("ext_authz is configured per virtual host; the test expects it per route only")
	}
	if _, ok := hcm.GetRouteConfig().GetTypedPerFilterConfig()[extAuthzFilter]; ok {
		t.Fatal("ext_authz is configured per route table; the test expects it per route only")
	}

	for _, tc := range routeExpectations {
		r := matchRoute(t, vh, tc.path)
		if r == nil {
			t.Errorf("%s matches no route", tc.path)
			continue
		}
		if got := r.GetRoute().GetCluster(); got != tc.cluster {
			t.Errorf("%s (%s) goes to %q via route %s, want %q", tc.path, tc.rationale, got, r.GetName(), tc.cluster)
		}
		if tc.cluster == nowhere && r.GetDirectResponse().GetStatus() != 404 {
			t.Errorf("%s: route %s should answer 404 itself", tc.path, r.GetName())
		}
		if disabled := extAuthzDisabled(t, r); tc.cluster != nowhere && disabled == tc.checked {
			t.Errorf("%s (%s): route %s has ext_authz disabled=%v, want %v", tc.path, tc.rationale, r.GetName(), disabled, !tc.checked)
		}
	}
}

func TestEnvoyClusters(t *testing.T) {
	b := loadBootstrap(t)
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
		if c.GetConnectTimeout() == nil || c.GetConnectTimeout().AsDuration() > time.Second {
			t.Errorf("cluster %s: want an explicit connect_timeout of at most 1 s, got %v", c.GetName(), c.GetConnectTimeout())
		}
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				addr := e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
				if c.GetName() == adminCluster {
					continue // the loopback admin interface; TestEnvoyReadinessIsTheAdminReady checks it
				}
				if !strings.HasSuffix(addr, ".svc.cluster.local") {
					t.Errorf("cluster %s: upstream %q is not a Kubernetes Service name", c.GetName(), addr)
				}
			}
		}
	}
	for _, name := range []string{"extauthz", "deviceflow", "dify_api"} {
		if clusters[name] == nil {
			t.Fatalf("no cluster %s", name)
		}
	}

	ext := clusters["extauthz"]
	opts, ok := ext.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatal("cluster extauthz: gRPC needs HTTP/2 (typed_extension_protocol_options)")
	}
	if unpack[*upstreamhttpv3.HttpProtocolOptions](t, "extauthz protocol options", opts).GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("cluster extauthz: explicit_http_config must select HTTP/2")
	}
	if hc := ext.GetHealthChecks(); len(hc) == 0 || hc[0].GetGrpcHealthCheck() == nil {
		t.Error("cluster extauthz: want a gRPC health check (extauthz serves grpc.health.v1)")
	}
	if addr := ext.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress(); addr.GetPortValue() != 9191 ||
		!strings.HasPrefix(addr.GetAddress(), "extauthz-headless.") || ext.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("cluster extauthz: want STRICT_DNS over the headless Service on 9191, so Checks spread over every replica; got %v %v",
			ext.GetType(), addr)
	}

	// Every cluster a route or the ext_authz filter names exists.
	hcm := publicHCM(t, b)
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); c != "" && clusters[c] == nil {
				t.Errorf("route %s names unknown cluster %s", r.GetName(), c)
			}
		}
	}
}

// adminCluster is envoy.yaml's cluster for the loopback admin interface, which the health listener passes /ready to.
const adminCluster = "admin"

func listenerByName(t *testing.T, b *bootstrapv3.Bootstrap, name string) *listenerv3.Listener {
	t.Helper()
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() == name {
			return l
		}
	}
	t.Fatalf("envoy.yaml has no listener %s", name)
	return nil
}

// listenerHCM is the HTTP connection manager of a listener with one filter chain holding only that.
func listenerHCM(t *testing.T, l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatalf("listener %s: want one filter chain holding the HTTP connection manager", l.GetName())
	}
	return unpack[*hcmv3.HttpConnectionManager](t, "listener "+l.GetName(), l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
}

func clusterByName(t *testing.T, b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("envoy.yaml has no cluster %s", name)
	return nil
}

func publicExtAuthz(t *testing.T, b *bootstrapv3.Bootstrap) *extauthzv3.ExtAuthz {
	t.Helper()
	hcm := publicHCM(t, b)
	i := httpFilterIndex(hcm, extAuthzFilter)
	if i < 0 {
		t.Fatal("no ext_authz filter on the public listener")
	}
	return unpack[*extauthzv3.ExtAuthz](t, "ext_authz", hcm.GetHttpFilters()[i].GetTypedConfig())
}

// TestEnvoyExtAuthzRetriesChecksThatNeverArrived: a Check that could not reach an extauthz replica (one being replaced or
// scaled in) is sent once more, to another replica, within the ext_authz timeout, instead of failing its request with 503.
// Only failures that mean the Check never reached extauthz's pipeline are retried.
func TestEnvoyExtAuthzRetriesChecksThatNeverArrived(t *testing.T) {
	b := loadBootstrap(t)
	gs := publicExtAuthz(t, b).GetGrpcService()
	if gs.GetEnvoyGrpc().GetRetryPolicy() != nil {
		t.Error("envoy_grpc.retry_policy applies to xDS streams only; a Check's retries are grpc_service.retry_policy")
	}
	rp := gs.GetRetryPolicy()
	if rp == nil {
		t.Fatal("the ext_authz grpc_service has no retry_policy: a Check that hits a replica going away fails its request")
	}
	var on []string
	for _, c := range strings.Split(rp.GetRetryOn(), ",") {
		on = append(on, strings.TrimSpace(c))
	}
	slices.Sort(on)
	if want := []string{"connect-failure", "refused-stream", "unavailable"}; !slices.Equal(on, want) {
		t.Errorf("retry_on %q: want exactly %v (the Check never reached a replica); 5xx, reset or deadline-exceeded would resend "+
			"a Check extauthz may be deciding", rp.GetRetryOn(), want)
	}
	if rp.GetNumRetries().GetValue() != 1 {
		t.Errorf("num_retries %v: want 1, within a 200 ms budget", rp.GetNumRetries())
	}
	timeout := gs.GetTimeout().AsDuration()
	if bo := rp.GetRetryBackOff(); bo == nil || bo.GetBaseInterval().AsDuration() > timeout/4 ||
		(bo.GetMaxInterval() != nil && bo.GetMaxInterval().AsDuration() > timeout/4) {
		t.Errorf("retry_back_off %v: the backoff must leave most of the %v timeout to the retried Check (Envoy's default base "+
			"interval, 1 s, outlasts it)", bo, timeout)
	}
	var otherHost bool
	for _, p := range rp.GetRetryHostPredicate() {
		otherHost = otherHost || p.GetName() == "envoy.retry_host_predicates.previous_hosts"
	}
	if !otherHost {
		t.Error("want the previous_hosts retry predicate, so the retry goes to another replica")
	}

	// The cluster's circuit breaker caps concurrent retries: a few would leave most Checks of a vanished replica unretried.
	for _, th := range clusterByName(t, b, "extauthz").GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() == corev3.RoutingPriority_DEFAULT && th.GetRetryBudget() == nil && th.GetMaxRetries().GetValue() < 100 {
			t.Errorf("cluster extauthz: max_retries %v allows too few concurrent retries; use a retry_budget", th.GetMaxRetries())
		}
	}
}

func TestEnvoyExtAuthzValidatesMutations(t *testing.T) {
	if !publicExtAuthz(t, loadBootstrap(t)).GetValidateMutations() {
		t.Error("validate_mutations must be true: Envoy would forward an invalid header value extauthz set instead of refusing it")
	}
}

// Idle timeouts of the upstream servers Envoy keeps connections to.
const (
	// Dify's API runs gunicorn without a keep-alive setting (api/docker/entrypoint.sh, api/gunicorn.conf.py), so gunicorn's
	// default applies: `keepalive = 2` (gunicorn/config.py).
	difyKeepAlive = 2 * time.Second
	// deviceflow's http.Server IdleTimeout (cmd/deviceflow/run.go).
	deviceflowIdleTimeout = 120 * time.Second
)

// TestEnvoyLetsGoOfIdleUpstreamConnectionsFirst: if the server closes an idle connection first, a request Envoy sends on it at
// that moment fails with 503 "upstream connection termination" (and must not be retried: it may have arrived). Envoy's
// default idle timeout is an hour.
func TestEnvoyLetsGoOfIdleUpstreamConnectionsFirst(t *testing.T) {
	b := loadBootstrap(t)
	for name, server := range map[string]time.Duration{difyAPI: difyKeepAlive, deviceflow: deviceflowIdleTimeout} {
		c := clusterByName(t, b, name)
		if c.GetCommonHttpProtocolOptions() != nil {
			t.Errorf("cluster %s: set the idle timeout in typed_extension_protocol_options, not the deprecated cluster field", name)
		}
		a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
		if !ok {
			t.Errorf("cluster %s: no HttpProtocolOptions, so Envoy keeps idle connections for an hour", name)
			continue
		}
		opts := unpack[*upstreamhttpv3.HttpProtocolOptions](t, "cluster "+name, a)
		idle := opts.GetCommonHttpProtocolOptions().GetIdleTimeout()
		if idle == nil || idle.AsDuration() <= 0 || idle.AsDuration() >= server {
			t.Errorf("cluster %s: idle_timeout %v, want below the server's %v", name, idle.AsDuration(), server)
		}
		if opts.GetExplicitHttpConfig().GetHttpProtocolOptions() == nil {
			t.Errorf("cluster %s: the upstream speaks HTTP/1.1; select it explicitly", name)
		}
	}
}

// publicTLS is the public listener's TLS context and the certificate resource its SDS file (shipped next to envoy.yaml)
// holds.
func publicTLS(t *testing.T, b *bootstrapv3.Bootstrap) (ctx *tlsv3.DownstreamTlsContext, sdsPath string, cert *tlsv3.TlsCertificate) {
	t.Helper()
	l := listenerByName(t, b, "public")
	ctx, ok := unpackIfType[*tlsv3.DownstreamTlsContext](t, l.GetFilterChains()[0].GetTransportSocket().GetTypedConfig())
	if !ok {
		t.Fatal("the public listener has no TLS transport socket: bearers cross the network in the clear and Envoy tells " +
			"upstreams x-forwarded-proto: http")
	}
	sds := ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 || sds[0].GetSdsConfig().GetPathConfigSource().GetPath() == "" {
		t.Fatalf("want the certificate from one file-based SDS resource (reloaded on renewal), got %v", sds)
	}
	sdsPath = sds[0].GetSdsConfig().GetPathConfigSource().GetPath()
	file, ok := strings.CutPrefix(sdsPath, "/etc/envoy/")
	if !ok || strings.Contains(file, "/") {
		t.Fatalf("SDS file %s: want it in /etc/envoy, where the overlay mounts the files of envoy/", sdsPath)
	}
	var dr discoveryv3.DiscoveryResponse
	decodeProtoYAML(t, "envoy/"+file, repoFile(t, "envoy/"+file), &dr)
	validateProto(t, "envoy/"+file, &dr)
	for _, r := range dr.GetResources() {
		secret, ok := unpackIfType[*tlsv3.Secret](t, r)
		if !ok || secret.GetName() != sds[0].GetName() {
			continue
		}
		validateProto(t, "envoy/"+file+" "+secret.GetName(), secret)
		return ctx, sdsPath, secret.GetTlsCertificate()
	}
	t.Fatalf("envoy/%s has no Secret %s", file, sds[0].GetName())
	return nil, "", nil
}

func TestEnvoyPublicListenerServesTLS(t *testing.T) {
	b := loadBootstrap(t)
	ctx, _, cert := publicTLS(t, b)
	common := ctx.GetCommonTlsContext()
	if v := common.GetTlsParams().GetTlsMinimumProtocolVersion(); v < tlsv3.TlsParameters_TLSv1_2 {
		t.Errorf("tls_minimum_protocol_version %v: want TLSv1_2 or later", v)
	}
	for _, p := range []string{"h2", "http/1.1"} {
		if !slices.Contains(common.GetAlpnProtocols(), p) {
			t.Errorf("alpn_protocols %v: want %s offered", common.GetAlpnProtocols(), p)
		}
	}
	if len(common.GetTlsCertificates()) > 0 {
		t.Error("a static tls_certificates entry is never reloaded: a renewed certificate would need a restart")
	}
	// Envoy reloads both files together when the kubelet swaps the Secret's ..data link in the watched directory.
	dir := cert.GetWatchedDirectory().GetPath()
	if dir == "" || path.Dir(cert.GetCertificateChain().GetFilename()) != dir || path.Dir(cert.GetPrivateKey().GetFilename()) != dir {
		t.Errorf("certificate %s and key %s: want both in the watched_directory %q", cert.GetCertificateChain().GetFilename(),
			cert.GetPrivateKey().GetFilename(), dir)
	}

	// Strict-Transport-Security on every response of the public listener.
	var maxAge int
	for _, h := range publicHCM(t, b).GetRouteConfig().GetResponseHeadersToAdd() {
		if strings.EqualFold(h.GetHeader().GetKey(), "strict-transport-security") {
			if m := regexp.MustCompile(`max-age=(\d+)`).FindStringSubmatch(h.GetHeader().GetValue()); m != nil {
				maxAge, _ = strconv.Atoi(m[1])
			}
		}
	}
	if maxAge < 31536000 {
		t.Errorf("Strict-Transport-Security max-age %d: want the route configuration to send at least a year", maxAge)
	}
}

// TestEnvoyPlainHTTPOnlyRedirects: every listener but the public (TLS) and health ones answers with a redirect to HTTPS and
// proxies nothing, so a credential sent in the clear reaches no upstream.
func TestEnvoyPlainHTTPOnlyRedirects(t *testing.T) {
	b := loadBootstrap(t)
	var redirects int
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() == "public" || l.GetName() == "health" {
			continue
		}
		for _, vh := range listenerHCM(t, l).GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if !r.GetRedirect().GetHttpsRedirect() {
					t.Errorf("listener %s: route %v does not redirect to HTTPS", l.GetName(), r.GetMatch())
				}
				redirects++
			}
		}
	}
	if redirects == 0 {
		t.Error("no listener redirects plain HTTP to HTTPS")
	}
}

// TestEnvoyReadinessIsTheAdminReady: the health listener passes GET /ready, and nothing else, to the admin interface on
// loopback, whose /ready answers 503 until Envoy has initialised and once its health check is failed (drain.sh).
func TestEnvoyReadinessIsTheAdminReady(t *testing.T) {
	b := loadBootstrap(t)
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	if admin.GetAddress() != "127.0.0.1" {
		t.Errorf("admin listens on %s: it can drain and stop the server; keep it on loopback", admin.GetAddress())
	}
	ac := clusterByName(t, b, adminCluster)
	ep := ac.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if ac.GetType() != clusterv3.Cluster_STATIC || ep.GetAddress() != admin.GetAddress() || ep.GetPortValue() != admin.GetPortValue() {
		t.Errorf("cluster %s: want STATIC to the admin interface %s:%d, got %v %s:%d", adminCluster, admin.GetAddress(),
			admin.GetPortValue(), ac.GetType(), ep.GetAddress(), ep.GetPortValue())
	}
	vhs := listenerHCM(t, listenerByName(t, b, "health")).GetRouteConfig().GetVirtualHosts()
	var ready int
	for _, vh := range vhs {
		for _, r := range vh.GetRoutes() {
			cluster := r.GetRoute().GetCluster()
			if cluster == "" {
				continue
			}
			var get bool
			for _, h := range r.GetMatch().GetHeaders() {
				get = get || (h.GetName() == ":method" && h.GetStringMatch().GetExact() == "GET")
			}
			if cluster != adminCluster || r.GetMatch().GetPath() != "/ready" || !get || r.GetRoute().GetPrefixRewrite() != "" ||
				r.GetRoute().GetRegexRewrite() != nil || r.GetRoute().GetPathRewritePolicy() != nil {
				t.Errorf("health listener: route %v to %s: only GET /ready, unrewritten, may reach the admin interface", r.GetMatch(), cluster)
			}
			ready++
		}
	}
	if ready != 1 {
		t.Errorf("health listener: %d routes reach a cluster, want the one to the admin's /ready", ready)
	}
}

// fakeAdmin stands in for Envoy's admin interface: it records the requests drain.sh makes and reports, in turn, the given
// numbers of requests in flight on the public listener (the last one repeats; -1 leaves the statistic out).
type fakeAdmin struct {
	mu     sync.Mutex
	calls  []string
	active []int
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
	n := f.active[0]
	if len(f.active) > 1 {
		f.active = f.active[1:]
	}
	f.mu.Unlock()
	switch {
	case r.URL.Path == "/healthcheck/fail" || r.URL.Path == "/drain_listeners":
		if r.Method != http.MethodPost {
			http.Error(w, "This endpoint requires POST", http.StatusMethodNotAllowed)
			return
		}
		_, _ = io.WriteString(w, "OK\n")
	case r.URL.Path == "/stats" && r.Method == http.MethodGet:
		// Envoy streams statistics in chunks: flush early so the answer is chunked, as Envoy's is.
		_, _ = io.WriteString(w, "http.admin.downstream_rq_active: 1\n")
		w.(http.Flusher).Flush()
		if n >= 0 {
			_, _ = fmt.Fprintf(w, "http.public.downstream_rq_active: %d\n", n)
		}
		_, _ = io.WriteString(w, "http.http_redirect.downstream_rq_active: 0\n")
	default:
		http.NotFound(w, r)
	}
}

// TestEnvoyDrainScript runs envoy/drain.sh, the Envoy pod's preStop hook, against a stand-in for the admin interface.
func TestEnvoyDrainScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here; the Envoy image runs drain.sh with its /bin/bash")
	}
	run := func(t *testing.T, port, maxSeconds string) (exitCode int, stderr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bash, filepath.Join("..", "envoy", "drain.sh"), port, "0", maxSeconds)
		var errb strings.Builder
		cmd.Stderr = &errb
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			exitCode = exit.ExitCode()
		default:
			t.Fatalf("drain.sh: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("drain.sh did not return within 60 s (its own limit was %s s)", maxSeconds)
		}
		return exitCode, errb.String()
	}
	serve := func(t *testing.T, active ...int) (*fakeAdmin, string) {
		t.Helper()
		f := &fakeAdmin{active: active}
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		return f, strings.TrimPrefix(srv.URL, "http://127.0.0.1:")
	}
	drainCalls := []string{"POST /healthcheck/fail", "POST /drain_listeners?graceful"}

	t.Run("waits for the requests in flight", func(t *testing.T) {
		f, port := serve(t, 0, 0, 2, 1, 0) // the two POSTs, then three polls
		if code, stderr := run(t, port, "30"); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if len(f.calls) < 2 || !slices.Equal(f.calls[:2], drainCalls) {
			t.Fatalf("admin calls %v: want %v first", f.calls, drainCalls)
		}
		if polls := f.calls[2:]; len(polls) != 3 || polls[0] != "GET /stats?filter=downstream_rq_active" {
			t.Errorf("polls %v: want three GET /stats, ending at the first that reports none in flight", polls)
		}
	})
	t.Run("gives up at its limit", func(t *testing.T) {
		f, port := serve(t, 0, 0, 3)
		code, stderr := run(t, port, "2")
		if code == 0 || !strings.Contains(stderr, "3 requests still in flight") {
			t.Errorf("exit %d, stderr %q: want a failure that says what was cut off", code, stderr)
		}
		if len(f.calls) < 3 {
			t.Errorf("admin calls %v: want it to have polled", f.calls)
		}
	})
	t.Run("an unreadable count is not zero", func(t *testing.T) {
		f, port := serve(t, 0, 0, -1)
		if code, stderr := run(t, port, "2"); code == 0 || !strings.Contains(stderr, "unknown requests still in flight") {
			t.Errorf("exit %d, stderr %q: want it to wait to its limit", code, stderr)
		}
		if len(f.calls) < 3 {
			t.Errorf("admin calls %v: want it to have polled", f.calls)
		}
	})
	t.Run("a gone admin interface ends the wait", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
		ln.Close()
		if code, stderr := run(t, port, "30"); code != 0 || !strings.Contains(stderr, "does not answer") {
			t.Errorf("exit %d, stderr %q: want it to stop waiting for an Envoy that is gone", code, stderr)
		}
	})
}

// envoyConfigMount is the ConfigMap the Envoy container mounts (envoy/ packaged by envoy/kustomization.yaml) and where.
func envoyConfigMount(t *testing.T, m *manifests, pod corev1.PodSpec, c corev1.Container) (string, *corev1.ConfigMap) {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && m.configMaps[v.ConfigMap.Name] != nil {
				return vm.MountPath, m.configMaps[v.ConfigMap.Name]
			}
		}
	}
	t.Fatal("the Envoy container mounts no ConfigMap from the manifests")
	return "", nil
}

func envoyFlag(t *testing.T, c corev1.Container, flag string) string {
	t.Helper()
	i := slices.Index(c.Args, flag)
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("envoy runs with %v, without %s", c.Args, flag)
	}
	return c.Args[i+1]
}

// difyMaxExecution is how long Dify lets an app run, and so its streamed response, last: APP_MAX_EXECUTION_TIME's default
// (api/configs/feature/__init__.py).
const difyMaxExecution = 1200 * time.Second

// TestEnvoyProxyDrainsBeforeItStops: Envoy exits at once on SIGTERM and cuts every stream (envoyproxy/envoy#7841), so the pod's
// preStop hook runs drain.sh, and the grace period lets it wait out a streamed app run.
func TestEnvoyProxyDrainsBeforeItStops(t *testing.T) {
	m := render(t, "overlays/envoy")
	d := m.deployments["authgate-envoy"]
	if d == nil {
		t.Fatal("overlays/envoy has no authgate-envoy Deployment")
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	mountDir, cm := envoyConfigMount(t, m, pod, c)
	if cm.Data["drain.sh"] != string(repoFile(t, "envoy/drain.sh")) {
		t.Error("the mounted ConfigMap's drain.sh is not envoy/drain.sh")
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatal("the Envoy container has no exec preStop hook")
	}
	cmd := c.Lifecycle.PreStop.Exec.Command
	if len(cmd) != 5 || cmd[0] != "/bin/bash" || cmd[1] != path.Join(mountDir, "drain.sh") {
		t.Fatalf("preStop runs %v: want /bin/bash %s ADMIN_PORT DRAIN_SECONDS MAX_SECONDS", cmd, path.Join(mountDir, "drain.sh"))
	}
	if admin := loadBootstrap(t).GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); cmd[2] != strconv.Itoa(int(admin)) {
		t.Errorf("drain.sh talks to admin port %s, envoy.yaml's admin listens on %d", cmd[2], admin)
	}
	drain, err := strconv.Atoi(envoyFlag(t, c, "--drain-time-s"))
	if err != nil || cmd[3] != strconv.Itoa(drain) {
		t.Errorf("drain.sh waits out a drain period of %s s, Envoy's --drain-time-s is %d", cmd[3], drain)
	}
	maxWait, err := strconv.Atoi(cmd[4])
	if err != nil || time.Duration(maxWait-drain)*time.Second < difyMaxExecution {
		t.Errorf("drain.sh waits at most %s s: want the drain period (%d s) plus Dify's longest app run (%v)", cmd[4], drain, difyMaxExecution)
	}
	const exitMargin = 10 // seconds for SIGTERM and Envoy's exit after the hook
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < int64(maxWait+exitMargin) {
		t.Errorf("terminationGracePeriodSeconds %v: the kubelet would kill Envoy before drain.sh's %d s are over", g, maxWait)
	}
	// Readiness must fail well within the drain period, while the listeners still accept, so the Service and the load
	// balancer stop sending before the listeners stop.
	rp := c.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/ready" {
		t.Fatal("the Envoy readiness probe must GET /ready (the admin interface's, through the health listener)")
	}
	if port := containerPort(c, rp.HTTPGet.Port); port != int32(listenerByName(t, loadBootstrap(t), "health").GetAddress().GetSocketAddress().GetPortValue()) {
		t.Errorf("the readiness probe hits port %d, not the health listener", port)
	}
	if detect := rp.PeriodSeconds * rp.FailureThreshold; int(detect) >= drain {
		t.Errorf("readiness takes up to %d s to fail, not within the %d s drain period", detect, drain)
	}
}

// TestEnvoyOverlayTerminatesTLS: the overlay mounts the certificate Secret where envoy.yaml's SDS resource reads it, the SDS
// file itself with envoy.yaml, and its Service sends 443 to the TLS listener and 80 to the redirect.
func TestEnvoyOverlayTerminatesTLS(t *testing.T) {
	m := render(t, "overlays/envoy")
	d := m.deployments["authgate-envoy"]
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	b := loadBootstrap(t)
	_, sdsPath, cert := publicTLS(t, b)

	mountDir, cm := envoyConfigMount(t, m, pod, c)
	if file := strings.TrimPrefix(sdsPath, "/etc/envoy/"); mountDir != "/etc/envoy" || cm.Data[file] != string(repoFile(t, "envoy/"+file)) {
		t.Errorf("envoy.yaml reads %s: the ConfigMap mounted at %s must hold envoy/%s", sdsPath, mountDir, file)
	}
	var secret *corev1.SecretVolumeSource
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && vm.MountPath == cert.GetWatchedDirectory().GetPath() {
				secret = v.Secret
			}
		}
	}
	if secret == nil || secret.SecretName == "" || len(secret.Items) > 0 {
		t.Fatalf("no Secret volume (all keys) mounted at %s, where the certificate is read", cert.GetWatchedDirectory().GetPath())
	}
	for _, f := range []string{cert.GetCertificateChain().GetFilename(), cert.GetPrivateKey().GetFilename()} {
		if k := path.Base(f); k != corev1.TLSCertKey && k != corev1.TLSPrivateKeyKey {
			t.Errorf("%s is not a key of a kubernetes.io/tls Secret", f)
		}
	}
	mode := int32(0o644)
	if secret.DefaultMode != nil {
		mode = *secret.DefaultMode
	}
	sc := pod.SecurityContext
	if mode&0o004 != 0 || mode&0o040 == 0 || sc == nil || sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup {
		t.Errorf("Secret mode %o, fsGroup %v: want the key readable by Envoy's group only", mode, sc.FSGroup)
	}

	listenerAt := map[int32]string{}
	for _, l := range b.GetStaticResources().GetListeners() {
		listenerAt[int32(l.GetAddress().GetSocketAddress().GetPortValue())] = l.GetName()
	}
	svc := m.services["authgate-envoy"]
	got := map[int32]string{}
	for _, p := range svc.Spec.Ports {
		got[p.Port] = listenerAt[containerPort(c, p.TargetPort)]
	}
	if got[443] != "public" || got[80] == "" || got[80] == "public" || got[80] == "health" {
		t.Errorf("Service authgate-envoy sends 443 to %q and 80 to %q: want the TLS listener and the redirect", got[443], got[80])
	}
}
