package deploy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	securityv1 "istio.io/api/security/v1"
)

const extauthzProvider = "authgate-extauthz"

// decodeIstioSpec decodes an Istio resource's spec into istio.io/api's type for its kind, rejecting unknown fields. protojson is
// stricter than Istio's own decoder in one way: durations must be written in seconds ("0.25s"), which Istio accepts too.
func decodeIstioSpec(t *testing.T, name string, o istioObject) proto.Message {
	t.Helper()
	var spec proto.Message
	switch o.Kind {
	case "AuthorizationPolicy":
		spec = &securityv1.AuthorizationPolicy{}
	case "DestinationRule":
		spec = &networkingv1.DestinationRule{}
	case "VirtualService":
		spec = &networkingv1.VirtualService{}
	default:
		t.Fatalf("%s: no schema for %s", name, o.Kind)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(o.Spec, spec); err != nil {
		t.Fatalf("%s: spec does not match %s: %v", name, spec.ProtoReflect().Descriptor().FullName(), err)
	}
	return spec
}

// istioResource reads the one resource of a kind from envoy/istio/ as the istio overlay renders it.
func istioResource[T proto.Message](t *testing.T, kind string) (istioObject, T) {
	t.Helper()
	for _, o := range render(t, "overlays/istio").istio {
		if o.Kind == kind {
			return o, decodeIstioSpec(t, kind, o).(T)
		}
	}
	t.Fatalf("overlays/istio renders no %s", kind)
	var zero T
	return istioObject{}, zero
}

func TestIstioMeshConfigFailsClosed(t *testing.T) {
	var mesh meshv1alpha1.MeshConfig
	decodeProtoYAML(t, "envoy/istio/meshconfig.yaml", repoFile(t, "envoy/istio/meshconfig.yaml"), &mesh)

	var grpc *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider
	for _, p := range mesh.GetExtensionProviders() {
		if p.GetName() == extauthzProvider {
			grpc = p.GetEnvoyExtAuthzGrpc()
		}
	}
	if grpc == nil {
		t.Fatalf("no envoyExtAuthzGrpc extension provider named %s", extauthzProvider)
	}
	if grpc.GetFailOpen() {
		t.Error("failOpen must be false")
	}
	if grpc.GetStatusOnError() != "503" {
		t.Errorf("statusOnError = %q, want \"503\"", grpc.GetStatusOnError())
	}
	checkTimeout := extauthzDefaults(t).CheckTimeout
	if grpc.GetTimeout() == nil || grpc.GetTimeout().AsDuration() > 200*time.Millisecond || grpc.GetTimeout().AsDuration() <= checkTimeout {
		t.Errorf("timeout %v: want explicit (Istio's default is 600 s), at most 200 ms and above CHECK_TIMEOUT %v", grpc.GetTimeout().AsDuration(), checkTimeout)
	}
	svc := render(t, "base").services["extauthz"]
	if grpc.GetService() != svc.Name+"."+svc.Namespace+".svc.cluster.local" || grpc.GetPort() != 9191 {
		t.Errorf("provider calls %s:%d, want the extauthz Service %s.%s on 9191", grpc.GetService(), grpc.GetPort(), svc.Name, svc.Namespace)
	}
	if body := grpc.GetIncludeRequestBodyInCheck(); body != nil && (body.GetMaxRequestBytes() == 0 || body.GetMaxRequestBytes() > 64<<10) {
		t.Errorf("includeRequestBodyInCheck: extauthz decides on headers; a body, if sent at all, must be bounded (maxRequestBytes %d)",
			body.GetMaxRequestBytes())
	}
	// Istio's default access log format logs the path with its query, and sso-complete carries the SSO assertion there.
	if mesh.GetAccessLogFile() != "" {
		format := strings.ToLower(mesh.GetAccessLogFormat())
		rest := strings.ReplaceAll(format, "%req_without_query(", "")
		if format == "" || strings.Contains(rest, "path)%") || strings.Contains(rest, "authorization") || strings.Contains(rest, "cookie") {
			t.Errorf("accessLogFile is set: accessLogFormat %q must log the path without its query and no credentials", format)
		}
	}
	switch n := mesh.GetPathNormalization().GetNormalization(); n {
	case meshv1alpha1.MeshConfig_ProxyPathNormalization_MERGE_SLASHES, meshv1alpha1.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES:
	default:
		t.Errorf("pathNormalization %v: policies must match the normalised path with slashes merged", n)
	}
}

// istioPathMatches is AuthorizationPolicy's path matching: exact, "prefix*", "*suffix" or "*".
func istioPathMatches(pattern, path string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(path, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(path, strings.TrimPrefix(pattern, "*"))
	}
	return pattern == path
}

func TestIstioAuthorizationPolicy(t *testing.T) {
	o, ap := istioResource[*securityv1.AuthorizationPolicy](t, "AuthorizationPolicy")
	if ap.GetAction().String() != "CUSTOM" || ap.GetProvider().GetName() != extauthzProvider {
		t.Fatalf("want action CUSTOM with provider %s, got %v %q", extauthzProvider, ap.GetAction(), ap.GetProvider().GetName())
	}
	if o.Metadata.Namespace != "istio-system" || ap.GetSelector().GetMatchLabels()["istio"] != "ingressgateway" {
		t.Errorf("the policy must apply to the ingress gateway (istio-system, istio: ingressgateway)")
	}
	if len(ap.GetRules()) != 1 || len(ap.GetRules()[0].GetTo()) != 1 || len(ap.GetRules()[0].GetFrom()) > 0 || len(ap.GetRules()[0].GetWhen()) > 0 {
		t.Fatal("want one rule with one `to` operation and no from/when conditions")
	}
	op := ap.GetRules()[0].GetTo()[0].GetOperation()
	if !slices.Equal(op.GetPaths(), []string{"/openapi/v1/*"}) || len(op.GetMethods()) > 0 || len(op.GetHosts()) > 0 || len(op.GetPorts()) > 0 {
		t.Errorf("want the operation to select paths [/openapi/v1/*] only, got %v", op)
	}
	wantNot := []string{"/openapi/v1/oauth/device/*", "/openapi/v1/device/sso-complete", "/openapi/v1/oauth/revoke",
		"/openapi/v1/.well-known/oauth-authorization-server"}
	if got := slices.Sorted(slices.Values(op.GetNotPaths())); !slices.Equal(got, slices.Sorted(slices.Values(wantNot))) {
		t.Errorf("notPaths = %v, want %v", got, wantNot)
	}

	for _, tc := range routeExpectations {
		if tc.cluster == nowhere {
			continue
		}
		p, _, _ := strings.Cut(tc.path, "?")
		checked := slices.ContainsFunc(op.GetPaths(), func(pat string) bool { return istioPathMatches(pat, p) }) &&
			!slices.ContainsFunc(op.GetNotPaths(), func(pat string) bool { return istioPathMatches(pat, p) })
		if checked != tc.checked {
			t.Errorf("%s (%s): checked by extauthz = %v, want %v", tc.path, tc.rationale, checked, tc.checked)
		}
	}
}

func TestIstioVirtualServiceMatchesEnvoyRoutes(t *testing.T) {
	_, vs := istioResource[*networkingv1.VirtualService](t, "VirtualService")
	hosts := map[string]string{
		"deviceflow.authgate.svc.cluster.local": deviceflow,
		"dify-api.dify.svc.cluster.local":       difyAPI,
	}
	for _, tc := range routeExpectations {
		p, _, _ := strings.Cut(tc.path, "?")
		var route *networkingv1.HTTPRoute
		for _, r := range vs.GetHttp() {
			if slices.ContainsFunc(r.GetMatch(), func(m *networkingv1.HTTPMatchRequest) bool {
				u := m.GetUri()
				if u.GetRegex() != "" || m.GetIgnoreUriCase() {
					t.Fatalf("route %s: the test understands exact and prefix URI matches only", r.GetName())
				}
				return (u.GetExact() != "" && p == u.GetExact()) || (u.GetPrefix() != "" && strings.HasPrefix(p, u.GetPrefix()))
			}) {
				route = r
				break
			}
		}
		got := nowhere
		if route != nil {
			if len(route.GetRoute()) != 1 {
				t.Fatalf("route %s: want one destination", route.GetName())
			}
			got = hosts[route.GetRoute()[0].GetDestination().GetHost()]
		}
		if got != tc.cluster {
			t.Errorf("%s (%s) goes to %q, want %q", tc.path, tc.rationale, got, tc.cluster)
		}
		if route == nil {
			continue
		}
		// A route-level removal runs after ext_authz: on checked routes it would strip the identity extauthz sets.
		removed := route.GetHeaders().GetRequest().GetRemove()
		for _, h := range authgateHeaders {
			if slices.Contains(removed, h) == tc.checked {
				t.Errorf("%s: route %s removes %s = %v, want %v", tc.path, route.GetName(), h, !tc.checked, !tc.checked)
			}
		}
	}
}

func TestIstioDestinationRuleForExtauthz(t *testing.T) {
	_, dr := istioResource[*networkingv1.DestinationRule](t, "DestinationRule")
	if dr.GetHost() != "extauthz.authgate.svc.cluster.local" {
		t.Errorf("host %s", dr.GetHost())
	}
	tp := dr.GetTrafficPolicy()
	if ct := tp.GetConnectionPool().GetTcp().GetConnectTimeout(); ct == nil || ct.AsDuration() > 200*time.Millisecond*2 {
		t.Errorf("connectTimeout %v: want an explicit one well inside a Check's budget", ct.AsDuration())
	}
	if tp.GetConnectionPool().GetTcp().GetMaxConnectionDuration() == nil {
		t.Error("want maxConnectionDuration so new replicas get traffic")
	}
	if tp.GetLoadBalancer().GetSimple().String() != "LEAST_REQUEST" {
		t.Errorf("load balancer %v, want LEAST_REQUEST", tp.GetLoadBalancer())
	}
}
