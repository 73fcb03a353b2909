package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingistio "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1 "istio.io/api/security/v1"
	typev1beta1 "istio.io/api/type/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/authgate/authgate/internal/config"
)

// The Gateway API overlays: Envoy Gateway, and Istio on the Gateway API.
const (
	envoyGatewayDir = "overlays/gateway-api"
	istioGatewayDir = "overlays/gateway-api-istio"
)

var gatewayAPIDirs = []string{envoyGatewayDir, istioGatewayDir}

// The HTTPRoutes of components/gateway-api: checkedRoute is the one extauthz checks, uncheckedRoute the one deviceflow
// authenticates itself.
const (
	checkedRoute   = "authgate-openapi"
	uncheckedRoute = "authgate-deviceflow"
)

const (
	gatewayGroup      = "gateway.networking.k8s.io"
	envoyGatewayGroup = "gateway.envoyproxy.io"
)

// gatewayAPIManifests is one rendered Gateway API overlay: the Kubernetes objects as k8s_test.go decodes them, and the
// Gateway API, Envoy Gateway and Istio objects in their published Go types.
type gatewayAPIManifests struct {
	*manifests
	gateways               map[string]*gwapiv1.Gateway
	httpRoutes             map[string]*gwapiv1.HTTPRoute
	referenceGrants        map[string]*gwapiv1beta1.ReferenceGrant
	securityPolicies       map[string]*egv1a1.SecurityPolicy
	clientTrafficPolicies  map[string]*egv1a1.ClientTrafficPolicy
	backendTrafficPolicies map[string]*egv1a1.BackendTrafficPolicy
	envoyProxies           map[string]*egv1a1.EnvoyProxy
}

var (
	gatewayRenderedMu sync.Mutex
	gatewayRendered   = map[string]*gatewayAPIManifests{}
)

// renderGatewayAPI builds a Gateway API overlay under deploy/k8s as `kubectl apply -k` would and decodes every object strictly.
func renderGatewayAPI(t *testing.T, dir string) *gatewayAPIManifests {
	t.Helper()
	gatewayRenderedMu.Lock()
	defer gatewayRenderedMu.Unlock()
	if m, ok := gatewayRendered[dir]; ok {
		return m
	}
	m := renderGatewayAPIAt(t, path.Join("k8s", dir))
	if !t.Failed() {
		gatewayRendered[dir] = m
	}
	return m
}

// renderGatewayAPIAt renders the kustomization in directory dir (relative to deploy/, or absolute).
func renderGatewayAPIAt(t *testing.T, dir string) *gatewayAPIManifests {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &gatewayAPIManifests{
		manifests: &manifests{
			dir:             dir,
			deployments:     map[string]*appsv1.Deployment{},
			services:        map[string]*corev1.Service{},
			configMaps:      map[string]*corev1.ConfigMap{},
			serviceAccounts: map[string]*corev1.ServiceAccount{},
			pdbs:            map[string]*policyv1.PodDisruptionBudget{},
			hpas:            map[string]*autoscalingv2.HorizontalPodAutoscaler{},
			networkPolicies: map[string]*networkingv1.NetworkPolicy{},
			jobs:            map[string]*batchv1.Job{},
		},
		gateways:               map[string]*gwapiv1.Gateway{},
		httpRoutes:             map[string]*gwapiv1.HTTPRoute{},
		referenceGrants:        map[string]*gwapiv1beta1.ReferenceGrant{},
		securityPolicies:       map[string]*egv1a1.SecurityPolicy{},
		clientTrafficPolicies:  map[string]*egv1a1.ClientTrafficPolicy{},
		backendTrafficPolicies: map[string]*egv1a1.BackendTrafficPolicy{},
		envoyProxies:           map[string]*egv1a1.EnvoyProxy{},
	}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := res.GetApiVersion() + "/" + res.GetKind()
		name := fmt.Sprintf("%s: %s %s", dir, gvk, res.GetName())
		switch gvk {
		case "apps/v1/Deployment":
			decodeStrictInto(t, name, y, m.deployments)
		case "v1/Service":
			decodeStrictInto(t, name, y, m.services)
		case "v1/ConfigMap":
			decodeStrictInto(t, name, y, m.configMaps)
		case "v1/ServiceAccount":
			decodeStrictInto(t, name, y, m.serviceAccounts)
		case "policy/v1/PodDisruptionBudget":
			decodeStrictInto(t, name, y, m.pdbs)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			decodeStrictInto(t, name, y, m.hpas)
		case "networking.k8s.io/v1/NetworkPolicy":
			decodeStrictInto(t, name, y, m.networkPolicies)
		case "batch/v1/Job":
			decodeStrictInto(t, name, y, m.jobs)
		case "gateway.networking.k8s.io/v1/Gateway":
			decodeStrictInto(t, name, y, m.gateways)
		case "gateway.networking.k8s.io/v1/HTTPRoute":
			decodeStrictInto(t, name, y, m.httpRoutes)
		case "gateway.networking.k8s.io/v1beta1/ReferenceGrant":
			decodeStrictInto(t, name, y, m.referenceGrants)
		case "gateway.envoyproxy.io/v1alpha1/SecurityPolicy":
			decodeStrictInto(t, name, y, m.securityPolicies)
		case "gateway.envoyproxy.io/v1alpha1/ClientTrafficPolicy":
			decodeStrictInto(t, name, y, m.clientTrafficPolicies)
		case "gateway.envoyproxy.io/v1alpha1/BackendTrafficPolicy":
			decodeStrictInto(t, name, y, m.backendTrafficPolicies)
		case "gateway.envoyproxy.io/v1alpha1/EnvoyProxy":
			decodeStrictInto(t, name, y, m.envoyProxies)
		case "security.istio.io/v1/AuthorizationPolicy", "networking.istio.io/v1/DestinationRule", "networking.istio.io/v1alpha3/EnvoyFilter":
			var o istioObject
			strictYAML(t, name, y, &o)
			decodeIstioSpec(t, name, o)
			if o.Metadata.Namespace == "" {
				t.Errorf("%s has no namespace", name)
			}
			m.istio = append(m.istio, o)
		default:
			t.Errorf("%s: no schema to check it against", name)
		}
	}
	return m
}

// decodeStrictInto decodes one object as the API server's strict field validation does: field names are case-sensitive, and
// unknown or duplicate fields are errors. (encoding/json, under strictYAML, would take "failopen" for failOpen.)
func decodeStrictInto[T any, P object[T]](t *testing.T, name string, y []byte, into map[string]P) {
	t.Helper()
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var o T
	strictErrs, err := kjson.UnmarshalStrict(js, &o, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, e := range strictErrs {
		t.Errorf("%s: %v", name, e)
	}
	p := P(&o)
	if p.GetNamespace() == "" {
		t.Errorf("%s has no namespace", name)
	}
	into[p.GetName()] = p
}

// theGateway is the overlay's one Gateway, the one its routes and policies refer to.
func (m *gatewayAPIManifests) theGateway(t *testing.T) *gwapiv1.Gateway {
	t.Helper()
	if len(m.gateways) != 1 {
		t.Fatalf("%s: want one Gateway, got %d", m.dir, len(m.gateways))
	}
	for _, g := range m.gateways {
		return g
	}
	return nil
}

// istioResource reads the one Istio resource of a kind the overlay renders.
func (m *gatewayAPIManifests) istioResource(t *testing.T, kind string) (istioObject, proto.Message) {
	t.Helper()
	var found []istioObject
	for _, o := range m.istio {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: want one %s, got %d", m.dir, kind, len(found))
	}
	return found[0], decodeIstioSpec(t, kind, found[0])
}

func TestGatewayAPIOverlaysRender(t *testing.T) {
	want := map[string][]string{
		envoyGatewayDir: {"SecurityPolicy", "ClientTrafficPolicy", "BackendTrafficPolicy", "EnvoyProxy"},
		istioGatewayDir: {"AuthorizationPolicy", "EnvoyFilter", "DestinationRule"},
	}
	for _, dir := range gatewayAPIDirs {
		t.Run(dir, func(t *testing.T) {
			m := renderGatewayAPI(t, dir)
			for _, name := range []string{"extauthz", "deviceflow"} {
				if m.deployments[name] == nil || m.services[name] == nil {
					t.Errorf("%s: the base's Deployment and Service are missing", name)
				}
			}
			if m.jobs["authgate-migrate"] == nil {
				t.Error("no migration Job authgate-migrate")
			}
			if len(m.deployments) != 2 {
				t.Errorf("the gateway controller runs the proxy; the overlay must add no Deployment, got %d", len(m.deployments))
			}
			if m.theGateway(t).Spec.GatewayClassName == "" {
				t.Error("the Gateway names no GatewayClass")
			}
			for _, name := range []string{checkedRoute, uncheckedRoute} {
				if m.httpRoutes[name] == nil {
					t.Errorf("no HTTPRoute %s", name)
				}
			}
			kinds := map[string]int{
				"SecurityPolicy": len(m.securityPolicies), "ClientTrafficPolicy": len(m.clientTrafficPolicies),
				"BackendTrafficPolicy": len(m.backendTrafficPolicies), "EnvoyProxy": len(m.envoyProxies),
			}
			for _, o := range m.istio {
				kinds[o.Kind]++
			}
			for kind, n := range kinds {
				if wanted := slices.Contains(want[dir], kind); wanted != (n > 0) {
					t.Errorf("%d %s objects: this overlay should have them = %v", n, kind, wanted)
				}
			}
			checkGatewayAPIReferences(t, m)
		})
	}
}

// checkGatewayAPIReferences checks that every object a Gateway API object names resolves within the rendered manifests: a
// policy whose target does not resolve attaches nowhere, and a SecurityPolicy that attaches nowhere lets its route through
// unchecked.
func checkGatewayAPIReferences(t *testing.T, m *gatewayAPIManifests) {
	t.Helper()
	g := m.theGateway(t)
	for name, r := range m.httpRoutes {
		if len(r.Spec.ParentRefs) == 0 {
			t.Errorf("HTTPRoute %s attaches to no Gateway", name)
		}
		for _, p := range r.Spec.ParentRefs {
			ns := string(derefOr(p.Namespace, gwapiv1.Namespace(r.Namespace)))
			if string(derefOr(p.Group, gatewayGroup)) != gatewayGroup || string(derefOr(p.Kind, "Gateway")) != "Gateway" ||
				string(p.Name) != g.Name || ns != g.Namespace {
				t.Errorf("HTTPRoute %s: parentRef %v is not the Gateway %s/%s", name, p, g.Namespace, g.Name)
			}
			if p.SectionName != nil || p.Port != nil {
				t.Errorf("HTTPRoute %s: attach to every listener, so a listener added for TLS serves the routes too", name)
			}
		}
		for _, l := range g.Spec.Listeners {
			from := gwapiv1.NamespacesFromSame
			if l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil && l.AllowedRoutes.Namespaces.From != nil {
				from = *l.AllowedRoutes.Namespaces.From
			}
			if from == gwapiv1.NamespacesFromSame && r.Namespace != g.Namespace {
				t.Errorf("listener %s does not admit HTTPRoute %s from namespace %s", l.Name, name, r.Namespace)
			}
		}
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				ref := b.BackendObjectReference
				ns := string(derefOr(ref.Namespace, gwapiv1.Namespace(r.Namespace)))
				if ns == r.Namespace {
					svc := m.services[string(ref.Name)]
					if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return ref.Port != nil && p.Port == int32(*ref.Port) }) {
						t.Errorf("HTTPRoute %s: backend %s:%v is no Service port in the manifests", name, ref.Name, ref.Port)
					}
				} else if !referenceGranted(m, r, ref) {
					t.Errorf("HTTPRoute %s: no ReferenceGrant in namespace %s lets it reach Service %s", name, ns, ref.Name)
				}
			}
		}
	}
	policyTargets := func(what, ns string, refs []gwapiv1.LocalPolicyTargetReferenceWithSectionName, kind string) {
		if len(refs) == 0 {
			t.Errorf("%s targets nothing", what)
		}
		for _, ref := range refs {
			var found bool
			switch kind {
			case "Gateway":
				found = string(ref.Name) == g.Name && ns == g.Namespace
			case "HTTPRoute":
				r := m.httpRoutes[string(ref.Name)]
				found = r != nil && r.Namespace == ns
			}
			if string(ref.Group) != gatewayGroup || string(ref.Kind) != kind || !found {
				t.Errorf("%s: target %s %s/%s is not a %s in the manifests", what, ref.Kind, ns, ref.Name, kind)
			}
		}
	}
	for name, p := range m.securityPolicies {
		policyTargets("SecurityPolicy "+name, p.Namespace, p.Spec.GetTargetRefs(), "HTTPRoute")
		if len(p.Spec.TargetSelectors) > 0 {
			t.Errorf("SecurityPolicy %s: targetSelectors attach by label, which the manifests cannot pin down", name)
		}
		if eg := p.Spec.ExtAuth; eg != nil && eg.GRPC != nil {
			for _, b := range eg.GRPC.BackendRefs {
				ns := string(derefOr(b.Namespace, gwapiv1.Namespace(p.Namespace)))
				if svc := m.services[string(b.Name)]; svc == nil || svc.Namespace != ns {
					t.Errorf("SecurityPolicy %s: extAuth backend %s/%s is not a Service in the manifests", name, ns, b.Name)
				}
			}
		}
	}
	for name, p := range m.clientTrafficPolicies {
		policyTargets("ClientTrafficPolicy "+name, p.Namespace, p.Spec.GetTargetRefs(), "Gateway")
	}
	for name, p := range m.backendTrafficPolicies {
		policyTargets("BackendTrafficPolicy "+name, p.Namespace, p.Spec.GetTargetRefs(), "HTTPRoute")
	}
	if ref := g.Spec.Infrastructure; ref != nil && ref.ParametersRef != nil {
		p := ref.ParametersRef
		if ep := m.envoyProxies[p.Name]; string(p.Group) != envoyGatewayGroup || p.Kind != "EnvoyProxy" || ep == nil || ep.Namespace != g.Namespace {
			t.Errorf("Gateway %s: parametersRef %v is not an EnvoyProxy in its namespace", g.Name, p)
		}
	}
	// The Istio policies that attach to the Gateway: the CUSTOM AuthorizationPolicy, and the EnvoyFilter that strips
	// client-sent identity headers.
	for _, o := range m.istio {
		var refs []*typev1beta1.PolicyTargetReference
		switch spec := decodeIstioSpec(t, o.Kind, o).(type) {
		case *securityv1.AuthorizationPolicy:
			refs = spec.GetTargetRefs()
		case *networkingv1alpha3.EnvoyFilter:
			refs = spec.GetTargetRefs()
		default:
			continue
		}
		for _, ref := range refs {
			ns := cmpOr(ref.GetNamespace(), o.Metadata.Namespace)
			if ref.GetGroup() != gatewayGroup || ref.GetKind() != "Gateway" || ref.GetName() != g.Name || ns != g.Namespace || o.Metadata.Namespace != ns {
				t.Errorf("%s %s: target %v is not the Gateway %s/%s in the policy's namespace", o.Kind, o.Metadata.Name, ref, g.Namespace, g.Name)
			}
		}
	}
}

// referenceGrant reports whether a ReferenceGrant in the Service's namespace lets route send requests to it.
func referenceGranted(m *gatewayAPIManifests, route *gwapiv1.HTTPRoute, ref gwapiv1.BackendObjectReference) bool {
	ns := string(derefOr(ref.Namespace, gwapiv1.Namespace(route.Namespace)))
	for _, rg := range m.referenceGrants {
		if rg.Namespace != ns {
			continue
		}
		from := slices.ContainsFunc(rg.Spec.From, func(f gwapiv1beta1.ReferenceGrantFrom) bool {
			return f.Group == gatewayGroup && f.Kind == "HTTPRoute" && string(f.Namespace) == route.Namespace
		})
		to := slices.ContainsFunc(rg.Spec.To, func(to gwapiv1beta1.ReferenceGrantTo) bool {
			return to.Group == "" && to.Kind == "Service" && (to.Name == nil || *to.Name == ref.Name)
		})
		if from && to {
			return true
		}
	}
	return false
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestGatewayAPIReferencesSurviveNamePrefix renders an overlay on top of each Gateway API overlay that prefixes every name, as
// a per-environment overlay might: the policies must still target the renamed routes and Gateway, and the NetworkPolicies
// still admit the renamed Gateway's pods.
func TestGatewayAPIReferencesSurviveNamePrefix(t *testing.T) {
	for _, dir := range gatewayAPIDirs {
		t.Run(dir, func(t *testing.T) {
			abs, err := filepath.Abs(filepath.Join("k8s", filepath.FromSlash(dir)))
			if err != nil {
				t.Fatal(err)
			}
			top := t.TempDir()
			rel, err := filepath.Rel(top, abs)
			if err != nil {
				t.Fatal(err)
			}
			k := "resources:\n- " + filepath.ToSlash(rel) + "\nnamePrefix: staging-\n"
			if err := os.WriteFile(filepath.Join(top, "kustomization.yaml"), []byte(k), 0o600); err != nil {
				t.Fatal(err)
			}
			m := renderGatewayAPIAt(t, top)
			if g := m.theGateway(t); g.Name != "staging-authgate" {
				t.Fatalf("the Gateway is %s, want it renamed to staging-authgate", g.Name)
			}
			checkGatewayAPIReferences(t, m)
			ns, pods := gatewayPods(t, dir, m)
			checkGatewayReachesAuthgate(t, m, ns, pods)
			if m.httpRoutes["staging-"+checkedRoute] == nil {
				t.Fatalf("no HTTPRoute staging-%s", checkedRoute)
			}
			if dir == envoyGatewayDir && len(extAuthTargets(t, m)[("staging-"+checkedRoute)]) == 0 {
				t.Errorf("no SecurityPolicy targets staging-%s", checkedRoute)
			}
		})
	}
}

// extAuthTargets maps each HTTPRoute name to the SecurityPolicies with extAuth that target it.
func extAuthTargets(t *testing.T, m *gatewayAPIManifests) map[string][]*egv1a1.SecurityPolicy {
	t.Helper()
	targets := map[string][]*egv1a1.SecurityPolicy{}
	for _, p := range m.securityPolicies {
		if p.Spec.ExtAuth == nil {
			continue
		}
		for _, ref := range p.Spec.GetTargetRefs() {
			if ref.Kind != "HTTPRoute" {
				t.Errorf("SecurityPolicy %s targets a %s: ext auth is attached per route only, so deviceflow's route stays unchecked", p.Name, ref.Kind)
				continue
			}
			targets[string(ref.Name)] = append(targets[string(ref.Name)], p)
		}
	}
	return targets
}

// gatewayRoute is where the Gateway API sends a request path: the HTTPRoute and rule chosen, or none.
type gatewayRoute struct {
	route *gwapiv1.HTTPRoute
	rule  *gwapiv1.HTTPRouteRule
}

// pathPrefixMatches is the Gateway API's PathPrefix: whole path elements, a trailing slash in the prefix ignored.
func pathPrefixMatches(prefix, p string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	return prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/")
}

// matchGatewayRoute picks the rule the Gateway API's precedence gives a normalised path across all routes: an Exact match
// over any PathPrefix, then the longest PathPrefix. A tie between routes would be settled by creation time, which the
// manifests cannot fix, so the test refuses one.
func matchGatewayRoute(t *testing.T, routes map[string]*gwapiv1.HTTPRoute, p string) gatewayRoute {
	t.Helper()
	p, _, _ = strings.Cut(p, "?")
	var best gatewayRoute
	bestExact, bestLen, tie := false, -1, false
	for _, name := range slices.Sorted(maps.Keys(routes)) {
		r := routes[name]
		if len(r.Spec.Hostnames) > 0 {
			t.Fatalf("HTTPRoute %s: the test understands routes for every hostname only", name)
		}
		for i := range r.Spec.Rules {
			rule := &r.Spec.Rules[i]
			for _, match := range rule.Matches {
				if len(match.Headers) > 0 || len(match.QueryParams) > 0 || match.Method != nil {
					t.Fatalf("HTTPRoute %s: the test understands path matches only", name)
				}
				typ, value := gwapiv1.PathMatchPathPrefix, "/"
				if match.Path != nil {
					typ, value = derefOr(match.Path.Type, gwapiv1.PathMatchPathPrefix), derefOr(match.Path.Value, "/")
				}
				var hit, exact bool
				switch typ {
				case gwapiv1.PathMatchExact:
					hit, exact = p == value, true
				case gwapiv1.PathMatchPathPrefix:
					hit = pathPrefixMatches(value, p)
				default:
					t.Fatalf("HTTPRoute %s: the test understands Exact and PathPrefix matches only, not %s", name, typ)
				}
				if !hit {
					continue
				}
				switch {
				case exact && !bestExact, exact == bestExact && len(value) > bestLen:
					best, bestExact, bestLen, tie = gatewayRoute{r, rule}, exact, len(value), false
				case exact == bestExact && len(value) == bestLen && best.route != r:
					tie = true
				}
			}
		}
	}
	if tie {
		t.Fatalf("%s: two HTTPRoutes match it with equal precedence", p)
	}
	return best
}

// upstream names where a rule sends requests, as envoy.yaml's clusters name them.
func (r gatewayRoute) upstream(t *testing.T, m *gatewayAPIManifests) string {
	t.Helper()
	if r.route == nil {
		return nowhere
	}
	if len(r.rule.BackendRefs) != 1 {
		t.Fatalf("HTTPRoute %s: want one backend per rule", r.route.Name)
	}
	ref := r.rule.BackendRefs[0].BackendObjectReference
	if string(derefOr(ref.Group, "")) != "" || string(derefOr(ref.Kind, "Service")) != "Service" || ref.Port == nil {
		t.Fatalf("HTTPRoute %s: want a Service backend with a port, got %v", r.route.Name, ref)
	}
	ns := string(derefOr(ref.Namespace, gwapiv1.Namespace(r.route.Namespace)))
	if svc := m.services["deviceflow"]; string(ref.Name) == svc.Name && ns == svc.Namespace && *ref.Port == 8080 {
		return deviceflow
	}
	return fmt.Sprintf("%s.%s.svc.cluster.local:%d", ref.Name, ns, *ref.Port)
}

// envoyUpstream is where envoy.yaml sends a path: its cluster, and for Dify's API the Service address the cluster resolves,
// so the two configurations can be compared.
func envoyUpstream(t *testing.T, cluster string) string {
	t.Helper()
	if cluster != difyAPI {
		return cluster
	}
	for _, c := range loadBootstrap(t).GetStaticResources().GetClusters() {
		if c.GetName() == difyAPI {
			sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
		}
	}
	t.Fatalf("envoy.yaml has no cluster %s", difyAPI)
	return ""
}

// gatewayProbePaths are the paths the route tests try: every path routeExpectations names, and each match value of envoy.yaml
// and of the HTTPRoutes with its neighbours (a trailing slash, a child, a longer sibling), which is where prefix and exact
// matching differ.
func gatewayProbePaths(t *testing.T, m *gatewayAPIManifests) []string {
	t.Helper()
	var values []string
	for _, r := range m.httpRoutes {
		for _, rule := range r.Spec.Rules {
			for _, match := range rule.Matches {
				if match.Path != nil && match.Path.Value != nil {
					values = append(values, *match.Path.Value)
				}
			}
		}
	}
	for _, vh := range publicHCM(t, loadBootstrap(t)).GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			values = append(values, r.GetMatch().GetPath()+r.GetMatch().GetPrefix()+r.GetMatch().GetPathSeparatedPrefix())
		}
	}
	var probes []string
	for _, tc := range routeExpectations {
		probes = append(probes, tc.path)
	}
	for _, v := range values {
		v = strings.TrimSuffix(v, "/")
		probes = append(probes, v, v+"/", v+"/x", v+"x", strings.ToUpper(v))
	}
	slices.Sort(probes)
	return slices.Compact(slices.DeleteFunc(probes, func(p string) bool { return p == "" }))
}

// TestGatewayAPIRoutesSplitAsEnvoy checks that both Gateway API overlays route every probe path where envoy.yaml does and check
// it with extauthz exactly when envoy.yaml does, and that routeExpectations hold for them.
func TestGatewayAPIRoutesSplitAsEnvoy(t *testing.T) {
	vh := publicHCM(t, loadBootstrap(t)).GetRouteConfig().GetVirtualHosts()[0]
	for _, dir := range gatewayAPIDirs {
		t.Run(dir, func(t *testing.T) {
			m := renderGatewayAPI(t, dir)
			checked := gatewayChecks(t, m)
			for _, p := range gatewayProbePaths(t, m) {
				r := matchGatewayRoute(t, m.httpRoutes, p)
				got := r.upstream(t, m)
				er := matchRoute(t, vh, p)
				want := envoyUpstream(t, er.GetRoute().GetCluster())
				if got != want {
					t.Errorf("%s goes to %q via %v, envoy.yaml sends it to %q via route %s", p, got, routeName(r), want, er.GetName())
				}
				if want == nowhere || r.route == nil {
					continue
				}
				if c, envoyChecks := checked(r, p), !extAuthzDisabled(t, er); c != envoyChecks {
					t.Errorf("%s (%s): checked by extauthz = %v, envoy.yaml checks it = %v", p, routeName(r), c, envoyChecks)
				}
				// The route split is the contract: whatever the HTTPRoute authgate-openapi serves is checked, nothing else is.
				if c, onChecked := checked(r, p), r.route.Name == checkedRoute; c != onChecked {
					t.Errorf("%s: served by %s, checked by extauthz = %v", p, routeName(r), c)
				}
			}
			for _, tc := range routeExpectations {
				r := matchGatewayRoute(t, m.httpRoutes, tc.path)
				if got := r.upstream(t, m); got != envoyUpstream(t, tc.cluster) {
					t.Errorf("%s (%s) goes to %q, want %q", tc.path, tc.rationale, got, tc.cluster)
				}
				if tc.cluster != nowhere && checked(r, tc.path) != tc.checked {
					t.Errorf("%s (%s): checked by extauthz = %v, want %v", tc.path, tc.rationale, !tc.checked, tc.checked)
				}
			}
		})
	}
}

func routeName(r gatewayRoute) string {
	if r.route == nil {
		return "no route"
	}
	return "HTTPRoute " + r.route.Name
}

// gatewayChecks returns whether extauthz checks a request the overlay routes by r: on Envoy Gateway, when a SecurityPolicy
// with extAuth targets its HTTPRoute; on Istio, when the CUSTOM AuthorizationPolicy's paths select it.
func gatewayChecks(t *testing.T, m *gatewayAPIManifests) func(r gatewayRoute, p string) bool {
	t.Helper()
	if len(m.securityPolicies) > 0 {
		targets := extAuthTargets(t, m)
		return func(r gatewayRoute, _ string) bool { return r.route != nil && len(targets[r.route.Name]) > 0 }
	}
	_, spec := m.istioResource(t, "AuthorizationPolicy")
	op := istioCustomOperation(t, spec.(*securityv1.AuthorizationPolicy))
	return func(_ gatewayRoute, p string) bool {
		p, _, _ = strings.Cut(p, "?")
		return slices.ContainsFunc(op.GetPaths(), func(pat string) bool { return istioPathMatches(pat, p) }) &&
			!slices.ContainsFunc(op.GetNotPaths(), func(pat string) bool { return istioPathMatches(pat, p) })
	}
}

// istioCustomOperation is the one `to` operation of a CUSTOM policy that selects requests by path only.
func istioCustomOperation(t *testing.T, ap *securityv1.AuthorizationPolicy) *securityv1.Operation {
	t.Helper()
	if len(ap.GetRules()) != 1 || len(ap.GetRules()[0].GetTo()) != 1 || len(ap.GetRules()[0].GetFrom()) > 0 || len(ap.GetRules()[0].GetWhen()) > 0 {
		t.Fatal("want one rule with one `to` operation and no from/when conditions")
	}
	op := ap.GetRules()[0].GetTo()[0].GetOperation()
	if len(op.GetMethods()) > 0 || len(op.GetNotMethods()) > 0 || len(op.GetHosts()) > 0 || len(op.GetNotHosts()) > 0 ||
		len(op.GetPorts()) > 0 || len(op.GetNotPorts()) > 0 {
		t.Fatalf("the operation must select by path only (a method, host or port condition leaves requests unchecked): %v", op)
	}
	return op
}

// TestGatewayAPIRoutesHandleIdentityHeaders checks the route filters: the unchecked route removes every identity header a client
// could send, and the checked route removes none, since Envoy Gateway and Istio both apply a route's header removal in the
// router, after ext auth, where it would strip the identity extauthz sets.
func TestGatewayAPIRoutesHandleIdentityHeaders(t *testing.T) {
	for _, dir := range gatewayAPIDirs {
		m := renderGatewayAPI(t, dir)
		for name, r := range m.httpRoutes {
			for i, rule := range r.Spec.Rules {
				var removed []string
				for _, f := range rule.Filters {
					switch f.Type {
					case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
						for _, h := range f.RequestHeaderModifier.Remove {
							removed = append(removed, strings.ToLower(h))
						}
						for _, h := range append(f.RequestHeaderModifier.Set, f.RequestHeaderModifier.Add...) {
							if strings.HasPrefix(strings.ToLower(string(h.Name)), "x-authgate-") {
								t.Errorf("%s: HTTPRoute %s sets %s", dir, name, h.Name)
							}
						}
					case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
					default:
						t.Errorf("%s: HTTPRoute %s rule %d: filter %s (a rewrite or redirect changes the path extauthz decided on)", dir, name, i, f.Type)
					}
				}
				for _, b := range rule.BackendRefs {
					if len(b.Filters) > 0 {
						t.Errorf("%s: HTTPRoute %s: backend filters run after ext auth; put filters on the rule", dir, name)
					}
				}
				switch name {
				case checkedRoute:
					for _, h := range removed {
						if strings.HasPrefix(h, "x-authgate-") {
							t.Errorf("%s: HTTPRoute %s removes %s after ext auth, stripping the identity extauthz sets", dir, name, h)
						}
					}
				case uncheckedRoute:
					for _, h := range authgateHeaders {
						if !slices.Contains(removed, h) {
							t.Errorf("%s: HTTPRoute %s rule %d does not remove %s sent by a client", dir, name, i, h)
						}
					}
				}
				for _, h := range []string{"authorization", "cookie", "x-forwarded-for", "x-request-id"} {
					if slices.Contains(removed, h) {
						t.Errorf("%s: HTTPRoute %s removes %s, which extauthz or deviceflow reads", dir, name, h)
					}
				}
			}
		}
	}
}

// TestGatewayAPITimeouts: deviceflow's routes are bounded as in envoy.yaml, and the Dify API's is not (server-sent events).
func TestGatewayAPITimeouts(t *testing.T) {
	for _, dir := range gatewayAPIDirs {
		m := renderGatewayAPI(t, dir)
		for name, r := range m.httpRoutes {
			for _, rule := range r.Spec.Rules {
				gr := gatewayRoute{r, &rule}
				if rule.Timeouts == nil || rule.Timeouts.Request == nil {
					t.Errorf("%s: HTTPRoute %s: every rule sets timeouts.request (the implementations' defaults differ)", dir, name)
					continue
				}
				d, err := time.ParseDuration(string(*rule.Timeouts.Request))
				if err != nil {
					t.Fatalf("%s: HTTPRoute %s: %v", dir, name, err)
				}
				switch up := gr.upstream(t, m); {
				case up == deviceflow && (d <= 0 || d > 30*time.Second):
					t.Errorf("%s: HTTPRoute %s: deviceflow answers in well under a second; want a bounded timeout, got %v", dir, name, d)
				case up != deviceflow && d != 0:
					t.Errorf("%s: HTTPRoute %s: App runs stream for minutes; want no request timeout (0s) to the Dify API, got %v", dir, name, d)
				}
			}
		}
	}
}

// checkInputHeaders are the request headers extauthz decides on: the bearer, the client address for the invalid-bearer
// budget, CORS preflight, the request id and trace context.
var checkInputHeaders = []string{"authorization", "x-forwarded-for", "origin", "access-control-request-method", "x-request-id", "traceparent"}

// envoyGatewayExtAuth is the extAuth of the one SecurityPolicy that has one.
func envoyGatewayExtAuth(t *testing.T, m *gatewayAPIManifests) (*egv1a1.SecurityPolicy, *egv1a1.ExtAuth) {
	t.Helper()
	var found []*egv1a1.SecurityPolicy
	for _, p := range m.securityPolicies {
		if p.Spec.ExtAuth != nil {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one SecurityPolicy with extAuth, got %d", len(found))
	}
	return found[0], found[0].Spec.ExtAuth
}

// extauthzConfig is extauthz's configuration as an overlay's manifests set it.
func extauthzConfig(t *testing.T, m *manifests) config.Extauthz {
	t.Helper()
	c, _ := authgateContainer(t, m.deployments["extauthz"].Spec.Template.Spec)
	env, _ := envOf(t, m, c)
	cfg, _, err := config.LoadExtauthz(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
	if err != nil {
		t.Fatalf("%s: extauthz would not start: %v", m.dir, err)
	}
	return cfg
}

func TestEnvoyGatewaySecurityPolicyFailsClosed(t *testing.T) {
	m := renderGatewayAPI(t, envoyGatewayDir)
	p, ea := envoyGatewayExtAuth(t, m)

	targets := extAuthTargets(t, m)
	if len(targets[checkedRoute]) != 1 || len(targets[uncheckedRoute]) != 0 || len(p.Spec.GetTargetRefs()) != 1 {
		t.Errorf("the SecurityPolicy must target HTTPRoute %s only: deviceflow authenticates %s's requests itself", checkedRoute, uncheckedRoute)
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		t.Error("extAuth.failOpen must be set to false: an auth decision that cannot be made is a deny")
	}
	if ea.StatusOnError == nil || *ea.StatusOnError != 503 {
		t.Errorf("extAuth.statusOnError = %v, want 503 (clients retry 5xx; Envoy's default is 403)", ea.StatusOnError)
	}
	if ea.Timeout == nil {
		t.Fatal("extAuth needs an explicit timeout: Envoy Gateway's default is 10 s")
	}
	timeout, err := time.ParseDuration(string(*ea.Timeout))
	if err != nil {
		t.Fatal(err)
	}
	if check := extauthzConfig(t, m.manifests).CheckTimeout; timeout > 200*time.Millisecond || timeout <= check {
		t.Errorf("extAuth timeout %v: want at most 200 ms and above CHECK_TIMEOUT %v, so extauthz answers before Envoy gives up", timeout, check)
	}

	// Settings that would let a request past extauthz, or keep extauthz from seeing what it decides on.
	if ea.HTTP != nil || ea.GRPC == nil {
		t.Fatal("extAuth must use the gRPC service: extauthz is an ext_authz v3 gRPC server")
	}
	if ea.RecomputeRoute != nil && *ea.RecomputeRoute {
		t.Error("recomputeRoute would let headers set after the Check pick another route")
	}
	if body := ea.BodyToExtAuth; body != nil && (body.MaxRequestBytes == 0 || body.MaxRequestBytes > 64<<10) {
		t.Errorf("bodyToExtAuth: extauthz decides on headers; a body, if sent at all, must be bounded (maxRequestBytes %d)", body.MaxRequestBytes)
	}
	if len(ea.HeadersToExtAuth) > 0 {
		// An allow-list hides client-sent x-authgate-* headers from extauthz, which removes them on an allow.
		t.Errorf("headersToExtAuth %v: send every header, so extauthz also sees the identity headers it must remove", ea.HeadersToExtAuth)
		for _, h := range checkInputHeaders {
			if !slices.ContainsFunc(ea.HeadersToExtAuth, func(s string) bool { return strings.EqualFold(s, h) }) {
				t.Errorf("headersToExtAuth does not let %s reach extauthz", h)
			}
		}
	}
	s := p.Spec
	if s.APIKeyAuth != nil || s.BasicAuth != nil || s.JWT != nil || s.OIDC != nil || s.Authorization != nil || s.CORS != nil || s.CSRF != nil {
		t.Error("the SecurityPolicy sets extAuth only: extauthz decides, and answers CORS preflights itself")
	}

	// The backend: extauthz's gRPC port.
	svc := m.services["extauthz"]
	i := slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == "grpc" })
	if i < 0 || deref(svc.Spec.Ports[i].AppProtocol) != "grpc" {
		t.Fatal("the extauthz Service has no grpc port with appProtocol grpc")
	}
	refs := ea.GRPC.BackendRefs
	if ea.GRPC.BackendRef != nil || len(refs) != 1 {
		t.Fatalf("want one backendRefs entry (backendRef is deprecated), got %d", len(refs))
	}
	ref := refs[0]
	if string(derefOr(ref.Group, "")) != "" || string(derefOr(ref.Kind, "Service")) != "Service" || string(ref.Name) != svc.Name ||
		string(derefOr(ref.Namespace, gwapiv1.Namespace(p.Namespace))) != svc.Namespace || ref.Port == nil || int32(*ref.Port) != svc.Spec.Ports[i].Port {
		t.Errorf("extAuth backend %v: want Service %s/%s port %d", ref.BackendObjectReference, svc.Namespace, svc.Name, svc.Spec.Ports[i].Port)
	}
	if ref.Fallback != nil && *ref.Fallback {
		t.Error("the extauthz backend is no fallback")
	}
}

// TestEnvoyGatewayBalancesChecks checks the cluster Envoy uses for Checks, as TestEnvoyClusters does for envoy.yaml's.
func TestEnvoyGatewayBalancesChecks(t *testing.T) {
	m := renderGatewayAPI(t, envoyGatewayDir)
	_, ea := envoyGatewayExtAuth(t, m)
	bs := ea.GRPC.BackendSettings
	if bs == nil {
		t.Fatal("extAuth.grpc.backendSettings: want the extauthz cluster tuned")
	}
	if bs.LoadBalancer == nil || bs.LoadBalancer.Type != egv1a1.LeastRequestLoadBalancerType {
		t.Errorf("loadBalancer %v: want LeastRequest", bs.LoadBalancer)
	}
	if bs.Timeout == nil || bs.Timeout.TCP == nil || bs.Timeout.TCP.ConnectTimeout == nil {
		t.Error("want an explicit connect timeout well inside a Check's budget")
	} else if d, err := time.ParseDuration(string(*bs.Timeout.TCP.ConnectTimeout)); err != nil || d > 400*time.Millisecond {
		t.Errorf("connectTimeout %v (%v): want at most 400 ms", d, err)
	}
	if cb := bs.CircuitBreaker; cb == nil || derefOr(cb.MaxParallelRequests, 1024) <= 1024 || derefOr(cb.MaxPendingRequests, 1024) <= 1024 {
		t.Error("circuitBreaker: every /openapi/v1 request is one Check, so the default 1024 parallel requests would turn a peak into 503s")
	}
	hc := bs.HealthCheck
	if hc == nil || hc.Active == nil || hc.Active.Type != egv1a1.ActiveHealthCheckerTypeGRPC {
		t.Error("want an active gRPC health check, so Envoy stops sending Checks to a replica that stopped serving")
	}
	if hc == nil || hc.Passive == nil {
		t.Error("want passive health checks (outlier detection) on the extauthz cluster")
	}

	// With routingType Service Envoy would send to the ClusterIP: one long-lived connection, every Check on one replica.
	g := m.theGateway(t)
	if g.Spec.Infrastructure == nil || g.Spec.Infrastructure.ParametersRef == nil {
		t.Fatal("the Gateway must reference the EnvoyProxy that pins routingType")
	}
	ep := m.envoyProxies[g.Spec.Infrastructure.ParametersRef.Name]
	if ep.Spec.RoutingType == nil || *ep.Spec.RoutingType != egv1a1.EndpointRoutingType {
		t.Errorf("EnvoyProxy %s: routingType %v, want Endpoint so Envoy balances Checks over every extauthz pod", ep.Name, ep.Spec.RoutingType)
	}
}

// TestEnvoyGatewayEdgeSettings checks what envoy.yaml does at the edge, done by Envoy Gateway's ClientTrafficPolicy and
// EnvoyProxy: identity headers stripped before ext auth, canonical paths, the client address, access logs without secrets.
func TestEnvoyGatewayEdgeSettings(t *testing.T) {
	m := renderGatewayAPI(t, envoyGatewayDir)
	if len(m.clientTrafficPolicies) != 1 {
		t.Fatalf("want one ClientTrafficPolicy, got %d", len(m.clientTrafficPolicies))
	}
	var ctp *egv1a1.ClientTrafficPolicy
	for _, p := range m.clientTrafficPolicies {
		ctp = p
	}
	g := m.theGateway(t)
	if refs := ctp.Spec.GetTargetRefs(); len(refs) != 1 || string(refs[0].Kind) != "Gateway" || string(refs[0].Name) != g.Name || refs[0].SectionName != nil {
		t.Fatalf("ClientTrafficPolicy %s must target the whole Gateway %s, got %v", ctp.Name, g.Name, refs)
	}
	h := ctp.Spec.Headers
	if h == nil || h.EarlyRequestHeaders == nil {
		t.Fatal("headers.earlyRequestHeaders: x-authgate-* must be removed before ext auth")
	}
	early := h.EarlyRequestHeaders
	removed := func(header string) bool {
		if slices.ContainsFunc(early.Remove, func(r string) bool { return strings.EqualFold(r, header) }) {
			return true
		}
		for _, sm := range early.RemoveOnMatch {
			name, v := strings.ToLower(header), strings.ToLower(sm.Value)
			switch derefOr(sm.Type, egv1a1.StringMatchExact) {
			case egv1a1.StringMatchExact:
				if name == v {
					return true
				}
			case egv1a1.StringMatchPrefix:
				if strings.HasPrefix(name, v) {
					return true
				}
			case egv1a1.StringMatchSuffix:
				if strings.HasSuffix(name, v) {
					return true
				}
			case egv1a1.StringMatchRegularExpression:
				re, err := regexp.Compile(sm.Value)
				if err != nil {
					t.Fatalf("removeOnMatch %q: %v", sm.Value, err)
				}
				if re.MatchString(name) {
					return true
				}
			}
		}
		return false
	}
	// A header name with an underscore never gets past Envoy's codec unless withUnderscoresAction is Allow (Envoy Gateway's
	// default rejects the request); a WSGI upstream such as Dify's would read x_authgate_account_id as x-authgate-account-id.
	underscores := derefOr(h.WithUnderscoresAction, egv1a1.WithUnderscoresActionRejectRequest)
	delivered := func(header string) bool {
		if strings.Contains(header, "_") && underscores != egv1a1.WithUnderscoresActionAllow {
			return false
		}
		return !removed(header)
	}
	for _, h := range append(slices.Clone(authgateHeaders), "x-authgate-future-header") {
		snake := strings.ReplaceAll(h, "-", "_")
		for _, variant := range []string{h, strings.ToUpper(h), snake, strings.ToUpper(snake)} {
			if delivered(variant) {
				t.Errorf("%s sent by a client reaches ext auth and the upstream (withUnderscoresAction %s)", variant, underscores)
			}
		}
	}
	for _, name := range append(slices.Clone(checkInputHeaders), "cookie") {
		if !delivered(name) {
			t.Errorf("%s is removed but must reach extauthz and the upstream", name)
		}
	}
	if len(early.Set) > 0 || len(early.Add) > 0 || len(early.AddIfAbsent) > 0 {
		t.Error("earlyRequestHeaders should only remove: a header set here reaches extauthz as if the client sent it")
	}
	if ctp.Spec.Path == nil {
		t.Fatal("want explicit path settings")
	}
	switch a := derefOr(ctp.Spec.Path.EscapedSlashesAction, egv1a1.UnescapeAndRedirect); a {
	case egv1a1.RejectRequestAction, egv1a1.UnescapeAndRedirect:
	default:
		t.Errorf("path.escapedSlashesAction %s: an escaped slash must be rejected or unescaped and redirected", a)
	}
	if derefOr(ctp.Spec.Path.DisableMergeSlashes, false) {
		t.Error("path.disableMergeSlashes: adjacent slashes must be merged, as envoy.yaml's merge_slashes does")
	}
	if ctp.Spec.ClientIPDetection != nil {
		t.Error("clientIPDetection turns off use_remote_address: the client address would come from a header the client sends")
	}

	ep := m.envoyProxies[g.Spec.Infrastructure.ParametersRef.Name]
	k := ep.Spec.Provider
	if k == nil || k.Kubernetes == nil || k.Kubernetes.EnvoyService == nil || k.Kubernetes.EnvoyService.ExternalTrafficPolicy == nil ||
		*k.Kubernetes.EnvoyService.ExternalTrafficPolicy != egv1a1.ServiceExternalTrafficPolicyLocal {
		t.Error("EnvoyProxy: the Service must keep the client address (externalTrafficPolicy: Local)")
	}
	if k != nil && k.Kubernetes != nil && k.Kubernetes.EnvoyDeployment != nil && derefOr(k.Kubernetes.EnvoyDeployment.Replicas, 1) < 2 {
		t.Error("EnvoyProxy: want at least 2 Envoy replicas, so one disruption does not stop /openapi/v1")
	}
	// Envoy Gateway's default access log format logs the path with its query; sso-complete carries an SSO assertion there.
	al := ep.Spec.Telemetry
	if al == nil || al.AccessLog == nil || (!derefOr(al.AccessLog.Disable, false) && len(al.AccessLog.Settings) == 0) {
		t.Fatal("EnvoyProxy: set the access log format (or disable access logs): the default logs the query")
	}
	for i, s := range al.AccessLog.Settings {
		if s.Format == nil {
			t.Errorf("access log %d: no format, so Envoy Gateway's default, which logs the query", i)
			continue
		}
		format := derefOr(s.Format.Text, "")
		for k, v := range s.Format.JSON {
			format += " " + k + "=" + v
		}
		lower := strings.ToLower(format)
		const pathWithoutQuery = "%req_without_query(:path)%"
		if !strings.Contains(lower, pathWithoutQuery) {
			t.Errorf("access log %d should log the path without its query", i)
		}
		rest := strings.ReplaceAll(lower, pathWithoutQuery, "")
		for _, leak := range []string{"authorization", "cookie", "(:path)", "%path", "x-envoy-original-path"} {
			if strings.Contains(rest, leak) {
				t.Errorf("access log %d logs %s: %s", i, leak, format)
			}
		}
	}
}

// TestEnvoyGatewayRetriesOnlyUnsentRequests: a retry of a request that reached the upstream could run an app twice or spend a
// single-use device code.
func TestEnvoyGatewayRetriesOnlyUnsentRequests(t *testing.T) {
	m := renderGatewayAPI(t, envoyGatewayDir)
	covered := map[string]bool{}
	for name, p := range m.backendTrafficPolicies {
		for _, ref := range p.Spec.GetTargetRefs() {
			covered[string(ref.Name)] = true
		}
		r := p.Spec.Retry
		if r == nil {
			continue
		}
		if r.RetryOn == nil || len(r.RetryOn.Triggers) == 0 || len(r.RetryOn.HTTPStatusCodes) > 0 {
			t.Errorf("BackendTrafficPolicy %s: name the retry triggers (the default retries 5xx responses)", name)
			continue
		}
		for _, trig := range r.RetryOn.Triggers {
			switch trig {
			case egv1a1.ConnectFailure, egv1a1.RefusedStream, egv1a1.ResetBeforeRequest:
			default:
				t.Errorf("BackendTrafficPolicy %s retries on %s, which can resend a request the upstream received", name, trig)
			}
		}
		if n := derefOr(r.NumRetries, 2); n < 1 || n > 3 {
			t.Errorf("BackendTrafficPolicy %s: %d retries", name, n)
		}
	}
	for _, name := range []string{checkedRoute, uncheckedRoute} {
		if !covered[name] {
			t.Errorf("no BackendTrafficPolicy covers HTTPRoute %s (envoy.yaml retries connect failures on every route)", name)
		}
	}
}

// meshExtAuthzProvider is the extension provider envoy/istio/meshconfig.yaml defines for extauthz.
func meshExtAuthzProvider(t *testing.T) *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider {
	t.Helper()
	var mesh meshv1alpha1.MeshConfig
	decodeProtoYAML(t, "envoy/istio/meshconfig.yaml", repoFile(t, "envoy/istio/meshconfig.yaml"), &mesh)
	for _, p := range mesh.GetExtensionProviders() {
		if p.GetName() == extauthzProvider && p.GetEnvoyExtAuthzGrpc() != nil {
			return p.GetEnvoyExtAuthzGrpc()
		}
	}
	t.Fatalf("envoy/istio/meshconfig.yaml has no envoyExtAuthzGrpc provider %s", extauthzProvider)
	return nil
}

func TestGatewayAPIIstioAuthorizationPolicy(t *testing.T) {
	m := renderGatewayAPI(t, istioGatewayDir)
	o, spec := m.istioResource(t, "AuthorizationPolicy")
	ap := spec.(*securityv1.AuthorizationPolicy)
	if ap.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
		t.Errorf("action %v, want CUSTOM", ap.GetAction())
	}
	grpc := meshExtAuthzProvider(t)
	if ap.GetProvider().GetName() != extauthzProvider {
		t.Errorf("provider %q, want %s of envoy/istio/meshconfig.yaml", ap.GetProvider().GetName(), extauthzProvider)
	}
	if grpc.GetFailOpen() {
		t.Error("the mesh's extauthz provider must not fail open")
	}
	g := m.theGateway(t)
	if g.Spec.GatewayClassName != "istio" {
		t.Errorf("gatewayClassName %q: Istio's Gateway API class is istio", g.Spec.GatewayClassName)
	}
	refs := ap.GetTargetRefs()
	if ap.GetSelector() != nil || ap.GetTargetRef() != nil || len(refs) != 1 || refs[0].GetKind() != "Gateway" ||
		refs[0].GetGroup() != gatewayGroup || refs[0].GetName() != g.Name || o.Metadata.Namespace != g.Namespace {
		t.Errorf("the policy must apply through targetRefs to the Gateway %s/%s, from its namespace; got %v in %s", g.Namespace, g.Name, refs, o.Metadata.Namespace)
	}
	// Which paths it checks: TestGatewayAPIRoutesSplitAsEnvoy compares them with the HTTPRoutes and envoy.yaml.
	op := istioCustomOperation(t, ap)
	if len(op.GetPaths()) == 0 {
		t.Error("the policy selects no paths")
	}

	// CHECK_TIMEOUT as this overlay sets it stays below the provider's timeout.
	if check := extauthzConfig(t, m.manifests).CheckTimeout; check >= grpc.GetTimeout().AsDuration() {
		t.Errorf("CHECK_TIMEOUT %v is not below the Istio provider's timeout %v", check, grpc.GetTimeout().AsDuration())
	}
	if ann := m.jobs["authgate-migrate"].Spec.Template.Annotations["sidecar.istio.io/inject"]; ann != "false" {
		t.Errorf("a sidecar would keep the migration Job running; sidecar.istio.io/inject = %q", ann)
	}
}

func TestGatewayAPIIstioDestinationRuleIsTheMeshOne(t *testing.T) {
	m := renderGatewayAPI(t, istioGatewayDir)
	o, got := m.istioResource(t, "DestinationRule")
	var shipped istioObject
	strictYAML(t, "envoy/istio/destinationrule.yaml", repoFile(t, "envoy/istio/destinationrule.yaml"), &shipped)
	if want := decodeIstioSpec(t, "envoy/istio/destinationrule.yaml", shipped); !proto.Equal(got, want) ||
		o.Metadata.Name != shipped.Metadata.Name || o.Metadata.Namespace != shipped.Metadata.Namespace {
		t.Errorf("the DestinationRule differs from envoy/istio/destinationrule.yaml:\n%v\n%v", got, want)
	}
	svc := m.services["extauthz"]
	if host := got.(*networkingistio.DestinationRule).GetHost(); host != svc.Name+"."+svc.Namespace+".svc.cluster.local" {
		t.Errorf("host %s is not the extauthz Service", host)
	}
}

// TestGatewayAPIIstioEnvoyFilterIsTheMeshOne: the Gateway's EnvoyFilter patches its gateway as envoy/istio/envoyfilter.yaml
// patches the ingress gateway, and attaches to the Gateway (TestIstioStripsIdentityHeadersBeforeExtAuthz checks what it does
// and that it selects the CUSTOM policy's pods).
func TestGatewayAPIIstioEnvoyFilterIsTheMeshOne(t *testing.T) {
	m := renderGatewayAPI(t, istioGatewayDir)
	o, spec := m.istioResource(t, "EnvoyFilter")
	got := spec.(*networkingv1alpha3.EnvoyFilter)
	var shipped istioObject
	strictYAML(t, "envoy/istio/envoyfilter.yaml", repoFile(t, "envoy/istio/envoyfilter.yaml"), &shipped)
	want := decodeIstioSpec(t, "envoy/istio/envoyfilter.yaml", shipped).(*networkingv1alpha3.EnvoyFilter)
	if len(got.GetConfigPatches()) != len(want.GetConfigPatches()) {
		t.Fatalf("%d patches, envoy/istio/envoyfilter.yaml has %d", len(got.GetConfigPatches()), len(want.GetConfigPatches()))
	}
	for i := range want.GetConfigPatches() {
		if !proto.Equal(got.GetConfigPatches()[i], want.GetConfigPatches()[i]) {
			t.Errorf("patch %d differs from envoy/istio/envoyfilter.yaml's:\n%v\n%v", i, got.GetConfigPatches()[i], want.GetConfigPatches()[i])
		}
	}
	if o.Metadata.Name != shipped.Metadata.Name || got.GetPriority() != want.GetPriority() {
		t.Errorf("name %s, priority %d: want envoy/istio/envoyfilter.yaml's %s, %d", o.Metadata.Name, got.GetPriority(),
			shipped.Metadata.Name, want.GetPriority())
	}
	g := m.theGateway(t)
	refs := got.GetTargetRefs()
	if got.GetWorkloadSelector() != nil || len(refs) != 1 || refs[0].GetGroup() != gatewayGroup || refs[0].GetKind() != "Gateway" ||
		refs[0].GetName() != g.Name || o.Metadata.Namespace != g.Namespace {
		t.Errorf("the EnvoyFilter must apply through targetRefs to the Gateway %s/%s, from its namespace; got %v in %s", g.Namespace, g.Name, refs, o.Metadata.Namespace)
	}
}

// TestGatewayAPINetworkPolicies: the gateway's pods, and only they, reach extauthz's gRPC port and deviceflow's HTTP port.
func TestGatewayAPINetworkPolicies(t *testing.T) {
	for _, dir := range gatewayAPIDirs {
		m := renderGatewayAPI(t, dir)
		ns, pods := gatewayPods(t, dir, m)
		otherGatewayPods := labels.Merge(pods, labels.Set{"gateway.envoyproxy.io/owning-gateway-name": "another", "gateway.networking.k8s.io/gateway-name": "another"})
		checkGatewayReachesAuthgate(t, m, ns, pods)
		for name, port := range map[string]int32{"extauthz": 9191, "deviceflow": 8080} {
			d := m.deployments[name]
			if allowsIngress(t, m.manifests, d, port, ns, otherGatewayPods) {
				t.Errorf("%s: another Gateway's pods reach %s on %d", dir, name, port)
			}
			if allowsIngress(t, m.manifests, d, port, "dify", labels.Set{"app.kubernetes.io/name": "api"}) {
				t.Errorf("%s: an arbitrary pod reaches %s on %d", dir, name, port)
			}
			if !allowsIngress(t, m.manifests, d, 9090, "monitoring", labels.Set{"app.kubernetes.io/name": "prometheus"}) {
				t.Errorf("%s: Prometheus cannot scrape %s", dir, name)
			}
		}
	}
}

// gatewayPods is the namespace and labels of the pods the overlay's gateway controller runs for its Gateway.
func gatewayPods(t *testing.T, dir string, m *gatewayAPIManifests) (string, labels.Set) {
	t.Helper()
	g := m.theGateway(t)
	switch dir {
	case envoyGatewayDir:
		return "envoy-gateway-system", labels.Set{
			"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy", "app.kubernetes.io/managed-by": "envoy-gateway",
			"gateway.envoyproxy.io/owning-gateway-name": g.Name, "gateway.envoyproxy.io/owning-gateway-namespace": g.Namespace,
		}
	case istioGatewayDir:
		return g.Namespace, labels.Set{
			"gateway.networking.k8s.io/gateway-name": g.Name, "gateway.networking.k8s.io/gateway-class-name": string(g.Spec.GatewayClassName),
			"gateway.istio.io/managed": "istio.io-gateway-controller",
		}
	}
	t.Fatalf("no gateway pods known for %s", dir)
	return "", nil
}

// checkGatewayReachesAuthgate checks that the NetworkPolicies let the gateway's pods reach extauthz's gRPC port and
// deviceflow's HTTP port.
func checkGatewayReachesAuthgate(t *testing.T, m *gatewayAPIManifests, ns string, pods labels.Set) {
	t.Helper()
	for app, port := range map[string]int32{"extauthz": 9191, "deviceflow": 8080} {
		// By label, not name: a namePrefix renames the Deployments.
		var d *appsv1.Deployment
		for _, dep := range m.deployments {
			if dep.Spec.Template.Labels["app.kubernetes.io/name"] == app {
				d = dep
			}
		}
		if d == nil {
			t.Fatalf("%s: no Deployment runs %s", m.dir, app)
		}
		if !allowsIngress(t, m.manifests, d, port, ns, pods) {
			t.Errorf("%s: the gateway's pods %v cannot reach %s on %d", m.dir, pods, app, port)
		}
	}
}

// TestGatewayAPIDeviceflowTrustsOneProxy: both gateways append the client address they accepted to X-Forwarded-For.
func TestGatewayAPIDeviceflowTrustsOneProxy(t *testing.T) {
	for _, dir := range gatewayAPIDirs {
		m := renderGatewayAPI(t, dir)
		c, _ := authgateContainer(t, m.deployments["deviceflow"].Spec.Template.Spec)
		env, _ := envOf(t, m.manifests, c)
		cfg, _, err := config.LoadDeviceflow(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
		if err != nil {
			t.Fatalf("%s: deviceflow would not start: %v", dir, err)
		}
		if cfg.TrustedProxyHops != 1 {
			t.Errorf("%s: deviceflow TRUSTED_PROXY_HOPS = %d, want 1", dir, cfg.TrustedProxyHops)
		}
	}
}
