package deploy_test

import (
	"strings"
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
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

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
	{"/openapi/v1/oauth/revoke", deviceflow, false, "RFC 7009, client authenticated by deviceflow"},
	{"/.well-known/oauth-authorization-server/openapi/v1", deviceflow, false, "RFC 8414 metadata"},
	{"/openapi/v1/.well-known/oauth-authorization-server", deviceflow, false, "RFC 8414 metadata"},
	{"/device", deviceflow, false, "approval page"},
	{"/device/sso-complete", deviceflow, false, "under the page's prefix (deviceflow answers 404)"},
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
