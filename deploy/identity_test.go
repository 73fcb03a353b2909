package deploy_test

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"

	securityv1 "istio.io/api/security/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/authgate/authgate/internal/assertion"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/pipeline"
)

// difyAPI is what deploy/k8s/dify-api locks down: Dify's api pods (labels of Dify's community Helm chart) in Dify's namespace.
var (
	difyNamespace = "dify"
	difyAPIPod    = labels.Set{"app.kubernetes.io/name": "dify", "app.kubernetes.io/component": "api"}
)

const difyAPIPort = 5001

// difyAPIManifests is one rendered deploy/k8s/dify-api kustomization, decoded into its real types with unknown fields rejected.
type difyAPIManifests struct {
	networkPolicies []*networkingv1.NetworkPolicy
	authzPolicies   map[string]*securityv1.AuthorizationPolicy
	requestAuthns   map[string]*securityv1.RequestAuthentication
	istioMeta       map[string]istioObject
}

func renderDifyAPI(t *testing.T, dir string) *difyAPIManifests {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), path.Join("k8s/dify-api", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/dify-api/%s: %v", dir, err)
	}
	m := &difyAPIManifests{authzPolicies: map[string]*securityv1.AuthorizationPolicy{},
		requestAuthns: map[string]*securityv1.RequestAuthentication{}, istioMeta: map[string]istioObject{}}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := res.GetApiVersion() + "/" + res.GetKind()
		name := fmt.Sprintf("dify-api/%s: %s %s", dir, gvk, res.GetName())
		if ns := res.GetNamespace(); ns != difyNamespace {
			t.Errorf("%s: namespace %q, want Dify's %q", name, ns, difyNamespace)
		}
		switch gvk {
		case "networking.k8s.io/v1/NetworkPolicy":
			var np networkingv1.NetworkPolicy
			strictYAML(t, name, y, &np)
			m.networkPolicies = append(m.networkPolicies, &np)
		case "security.istio.io/v1/AuthorizationPolicy", "security.istio.io/v1/RequestAuthentication":
			var o istioObject
			strictYAML(t, name, y, &o)
			m.istioMeta[o.Metadata.Name] = o
			if o.Kind == "AuthorizationPolicy" {
				m.authzPolicies[o.Metadata.Name] = decodeIstioSpec(t, name, o).(*securityv1.AuthorizationPolicy)
			} else {
				var ra securityv1.RequestAuthentication
				decodeProtoYAML(t, name, o.Spec, &ra) // JSON is YAML
				m.requestAuthns[o.Metadata.Name] = &ra
			}
		default:
			t.Errorf("%s: no schema to check it against", name)
		}
	}
	return m
}

// admitsAPI reports whether a NetworkPolicy selecting Dify's api pods admits TCP on the api's port from a pod with fromLabels
// in namespace fromNamespace, and whether any policy selects the api pods at all (without one, everything is admitted).
func (m *difyAPIManifests) admitsAPI(t *testing.T, fromNamespace string, fromLabels labels.Set) (admitted, isolated bool) {
	t.Helper()
	for _, np := range m.networkPolicies {
		if !selects(t, &np.Spec.PodSelector, difyAPIPod) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			continue
		}
		isolated = true
		for _, rule := range np.Spec.Ingress {
			if !portListed(rule.Ports, difyAPIPort) {
				continue
			}
			for _, peer := range rule.From {
				ns := peer.NamespaceSelector == nil && fromNamespace == np.Namespace ||
					peer.NamespaceSelector != nil && selects(t, peer.NamespaceSelector, labels.Set{"kubernetes.io/metadata.name": fromNamespace})
				if ns && (peer.PodSelector == nil || selects(t, peer.PodSelector, fromLabels)) {
					admitted = true
				}
			}
		}
	}
	return admitted, isolated
}

type peer struct {
	what      string
	namespace string
	labels    labels.Set
}

var (
	authgateEnvoy = peer{"authgate's Envoy", "authgate", labels.Set{"app.kubernetes.io/name": "authgate-envoy"}}
	istioGateway  = peer{"the Istio ingress gateway", "istio-system", labels.Set{"istio": "ingressgateway", "app": "istio-ingressgateway"}}
	difyPeers     = []peer{
		{"Dify's web", difyNamespace, labels.Set{"app.kubernetes.io/name": "dify", "app.kubernetes.io/component": "web"}},
		{"Dify's worker", difyNamespace, labels.Set{"app.kubernetes.io/name": "dify", "app.kubernetes.io/component": "worker"}},
	}
	// Pods that must never reach the api: they could send x-authgate-* headers of their choosing.
	strangers = []peer{
		{"an unlabelled pod in Dify's namespace", difyNamespace, labels.Set{"app": "debug"}},
		{"a pod claiming Dify's labels in another namespace", "default", labels.Set{"app.kubernetes.io/name": "dify", "app.kubernetes.io/component": "web"}},
		{"extauthz", "authgate", labels.Set{"app.kubernetes.io/name": "extauthz"}},
		{"deviceflow", "authgate", labels.Set{"app.kubernetes.io/name": "deviceflow"}},
		{"a pod in authgate's namespace", "authgate", labels.Set{"app": "debug"}},
	}
)

// TestDifyAPIAdmitsOnlyTheProxyAndDify: whichever proxy runs ext_authz is the only way to Dify's api from outside Dify, so no
// other pod can hand the api an x-authgate-account-id of its choosing.
func TestDifyAPIAdmitsOnlyTheProxyAndDify(t *testing.T) {
	for dir, c := range map[string]struct{ proxy, other peer }{
		"envoy":           {authgateEnvoy, istioGateway},
		"istio":           {istioGateway, authgateEnvoy},
		"istio-assertion": {istioGateway, authgateEnvoy},
	} {
		t.Run(dir, func(t *testing.T) {
			m := renderDifyAPI(t, dir)
			for _, np := range m.networkPolicies {
				if !selects(t, &np.Spec.PodSelector, difyAPIPod) {
					t.Errorf("NetworkPolicy %s does not select Dify's api pods %v", np.Name, difyAPIPod)
				}
				for _, p := range difyPeers {
					if selects(t, &np.Spec.PodSelector, p.labels) {
						t.Errorf("NetworkPolicy %s selects %s too: it would cut it off", np.Name, p.what)
					}
				}
				for _, rule := range np.Spec.Ingress {
					if len(rule.From) == 0 {
						t.Errorf("NetworkPolicy %s admits the api's traffic from anywhere", np.Name)
					}
					for _, from := range rule.From {
						if from.IPBlock != nil || from.PodSelector == nil {
							t.Errorf("NetworkPolicy %s admits a peer that is not named pods: %+v", np.Name, from)
						}
					}
				}
			}
			for _, p := range append([]peer{c.proxy}, difyPeers...) {
				if ok, isolated := m.admitsAPI(t, p.namespace, p.labels); !ok || !isolated {
					t.Errorf("%s cannot reach Dify's api on %d (admitted=%v, isolated=%v)", p.what, difyAPIPort, ok, isolated)
				}
			}
			for _, p := range append([]peer{c.other}, strangers...) {
				if ok, _ := m.admitsAPI(t, p.namespace, p.labels); ok {
					t.Errorf("%s can reach Dify's api", p.what)
				}
			}
		})
	}
}

// istioSource is a caller as an Istio AuthorizationPolicy sees it.
type istioSource struct {
	principal, namespace, requestPrincipal string
}

// istioMatch is Istio's string match for principals, namespaces and paths: exact, "prefix*", "*suffix" or "*".
func istioMatch(pattern, s string) bool {
	switch {
	case pattern == "*":
		return s != ""
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(s, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(s, strings.TrimPrefix(pattern, "*"))
	}
	return pattern == s
}

func anyMatch(patterns []string, s string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return istioMatch(p, s) })
}

// fieldMatches is one field of a rule: empty values match everything, notValues exclude.
func fieldMatches(values, notValues []string, s string) bool {
	return (len(values) == 0 || anyMatch(values, s)) && !anyMatch(notValues, s)
}

// ruleMatches evaluates the fields of an AuthorizationPolicy rule that the shipped policies use, and fails the test on any
// other, so that a policy edited beyond them is not judged by a partial evaluator.
func ruleMatches(t *testing.T, r *securityv1.Rule, src istioSource, reqPath string) bool {
	t.Helper()
	if len(r.GetWhen()) > 0 {
		t.Fatalf("rule %v: conditions are not evaluated by this test", r)
	}
	fromOK := len(r.GetFrom()) == 0
	for _, f := range r.GetFrom() {
		s := f.GetSource()
		if len(s.GetIpBlocks())+len(s.GetNotIpBlocks())+len(s.GetRemoteIpBlocks())+len(s.GetNotRemoteIpBlocks())+
			len(s.GetServiceAccounts())+len(s.GetNotServiceAccounts()) > 0 {
			t.Fatalf("source %v: fields not evaluated by this test", s)
		}
		if fieldMatches(s.GetPrincipals(), s.GetNotPrincipals(), src.principal) &&
			fieldMatches(s.GetNamespaces(), s.GetNotNamespaces(), src.namespace) &&
			fieldMatches(s.GetRequestPrincipals(), s.GetNotRequestPrincipals(), src.requestPrincipal) {
			fromOK = true
		}
	}
	toOK := len(r.GetTo()) == 0
	for _, to := range r.GetTo() {
		op := to.GetOperation()
		if len(op.GetHosts())+len(op.GetNotHosts())+len(op.GetPorts())+len(op.GetNotPorts())+len(op.GetMethods())+len(op.GetNotMethods()) > 0 {
			t.Fatalf("operation %v: fields not evaluated by this test", op)
		}
		if fieldMatches(op.GetPaths(), op.GetNotPaths(), reqPath) {
			toOK = true
		}
	}
	return fromOK && toOK
}

// istioAllows is the verdict of the AuthorizationPolicies on Dify's api sidecar: any matching DENY refuses; with ALLOW policies
// present, one must match.
func istioAllows(t *testing.T, m *difyAPIManifests, src istioSource, reqPath string) bool {
	t.Helper()
	allowPolicies, allowed := 0, false
	for name, p := range m.authzPolicies {
		if !istioSelects(t, name, p) {
			continue
		}
		for _, r := range p.GetRules() {
			matched := ruleMatches(t, r, src, reqPath)
			switch p.GetAction() {
			case securityv1.AuthorizationPolicy_DENY:
				if matched {
					return false
				}
			case securityv1.AuthorizationPolicy_ALLOW:
				allowed = allowed || matched
			default:
				t.Fatalf("%s: action %v is not evaluated by this test", name, p.GetAction())
			}
		}
		if p.GetAction() == securityv1.AuthorizationPolicy_ALLOW {
			allowPolicies++
		}
	}
	return allowPolicies == 0 || allowed
}

func istioSelects(t *testing.T, name string, p *securityv1.AuthorizationPolicy) bool {
	t.Helper()
	got := labels.Set(p.GetSelector().GetMatchLabels())
	if len(got) == 0 || !labels.SelectorFromSet(got).Matches(difyAPIPod) {
		t.Errorf("%s selects %v, not Dify's api workload %v", name, got, difyAPIPod)
		return false
	}
	return true
}

const gatewayPrincipal = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"

// TestDifyAPIIstioAdmitsOnlyTheGatewayToOpenAPI: on the api's sidecar, only the ingress gateway's mTLS identity reaches
// /openapi/v1; Dify's own workloads keep the rest of the api; anything else in the mesh is refused.
func TestDifyAPIIstioAdmitsOnlyTheGatewayToOpenAPI(t *testing.T) {
	m := renderDifyAPI(t, "istio")
	if len(m.authzPolicies) == 0 {
		t.Fatal("dify-api/istio has no AuthorizationPolicy")
	}
	gateway := istioSource{principal: gatewayPrincipal, namespace: "istio-system"}
	difyWeb := istioSource{principal: "cluster.local/ns/dify/sa/dify-web", namespace: difyNamespace}
	for _, c := range []struct {
		src   istioSource
		path  string
		allow bool
	}{
		{gateway, "/openapi/v1/apps", true},
		{gateway, "/console/api/apps", true},
		{difyWeb, "/console/api/apps", true},
		{difyWeb, "/openapi/v1/apps", false},
		{difyWeb, "/openapi/v1", false},
		{istioSource{principal: "cluster.local/ns/authgate/sa/extauthz", namespace: "authgate"}, "/openapi/v1/apps", false},
		{istioSource{principal: "cluster.local/ns/default/sa/default", namespace: "default"}, "/console/api/apps", false},
		{istioSource{}, "/openapi/v1/apps", false}, // plain text: no mTLS identity
	} {
		if got := istioAllows(t, m, c.src, c.path); got != c.allow {
			t.Errorf("%+v %s: allowed = %v, want %v", c.src, c.path, got, c.allow)
		}
	}
}

// TestDifyAPIRequiresAValidAssertion: with dify-api/istio-assertion, the api's sidecar verifies x-authgate-assertion against
// extauthz's JWKS (the issuer, path and audience extauthz signs with) and refuses /openapi/v1 without a valid one, except the
// routes extauthz allows without a bearer, which carry no identity.
func TestDifyAPIRequiresAValidAssertion(t *testing.T) {
	m := renderDifyAPI(t, "istio-assertion")
	if len(m.requestAuthns) != 1 {
		t.Fatalf("want one RequestAuthentication, got %d", len(m.requestAuthns))
	}
	for name, ra := range m.requestAuthns {
		if got := labels.Set(ra.GetSelector().GetMatchLabels()); !labels.Equals(got, difyAPIPod) {
			t.Errorf("%s selects %v, want Dify's api %v", name, got, difyAPIPod)
		}
		rules := ra.GetJwtRules()
		if len(rules) != 1 {
			t.Fatalf("%s: want one jwtRule, got %d", name, len(rules))
		}
		r := rules[0]
		if r.GetIssuer() != assertion.Issuer || !slices.Equal(r.GetAudiences(), []string{config.DefaultIdentityAssertionAudience}) {
			t.Errorf("%s: issuer %q audiences %v, want %q and [%s]", name, r.GetIssuer(), r.GetAudiences(), assertion.Issuer,
				config.DefaultIdentityAssertionAudience)
		}
		if len(r.GetFromHeaders()) != 1 || r.GetFromHeaders()[0].GetName() != assertion.Header || r.GetFromHeaders()[0].GetPrefix() != "" {
			t.Errorf("%s: fromHeaders %v, want the bare %s", name, r.GetFromHeaders(), assertion.Header)
		}
		// The JWKS is the extauthz Service's admin port, in authgate's namespace, as the istio overlay renders it.
		svc := render(t, "overlays/istio").services["extauthz"]
		var adminPort int32
		for _, p := range svc.Spec.Ports {
			if p.Name == "admin" {
				adminPort = p.Port
			}
		}
		want := fmt.Sprintf("http://%s.%s.svc.cluster.local:%d%s", svc.Name, svc.Namespace, adminPort, assertion.JWKSPath)
		if r.GetJwksUri() != want || r.GetJwks() != "" {
			t.Errorf("%s: jwksUri %q, want %q", name, r.GetJwksUri(), want)
		}
		// istiod fetches the keys: it must be admitted to that port.
		m := render(t, "overlays/istio")
		if !allowsIngress(t, m, m.deployments["extauthz"], adminPort, "istio-system", labels.Set{"app": "istiod"}) {
			t.Errorf("overlays/istio: istiod cannot fetch the JWKS from extauthz:%d", adminPort)
		}
	}

	gateway := istioSource{principal: gatewayPrincipal, namespace: "istio-system"}
	asserted := gateway
	asserted.requestPrincipal = assertion.Issuer + "/aaaaaaaa-0000-4000-8000-000000000001"
	otherIssuer := gateway
	otherIssuer.requestPrincipal = "https://accounts.example.com/aaaaaaaa-0000-4000-8000-000000000001"
	difyWeb := istioSource{principal: "cluster.local/ns/dify/sa/dify-web", namespace: difyNamespace}
	for _, c := range []struct {
		src   istioSource
		path  string
		allow bool
	}{
		{asserted, "/openapi/v1/apps", true},
		{gateway, "/openapi/v1/apps", false},     // through the gateway but without a (valid) assertion
		{otherIssuer, "/openapi/v1/apps", false}, // a JWT from another issuer
		{gateway, "/openapi/v1", false},
		{gateway, "/console/api/apps", true},
		{difyWeb, "/console/api/apps", true},
	} {
		if got := istioAllows(t, m, c.src, c.path); got != c.allow {
			t.Errorf("%+v %s: allowed = %v, want %v", c.src, c.path, got, c.allow)
		}
	}

	// What may pass without an assertion is exactly a route extauthz allows without a bearer.
	policy, err := pipeline.LoadPolicy("")
	if err != nil {
		t.Fatal(err)
	}
	authNone := map[string]bool{}
	for _, r := range policy.Routes {
		if r.AuthNone {
			authNone[policy.Prefix+r.Pattern] = true
		}
	}
	p := m.authzPolicies["dify-api-require-assertion"]
	if p == nil || p.GetAction() != securityv1.AuthorizationPolicy_DENY {
		t.Fatalf("no DENY policy dify-api-require-assertion")
	}
	for _, r := range p.GetRules() {
		for _, to := range r.GetTo() {
			for _, np := range to.GetOperation().GetNotPaths() {
				if !authNone[np] {
					t.Errorf("%s passes without an assertion but is not an auth: none route", np)
				}
				if !istioAllows(t, m, gateway, np) {
					t.Errorf("%s (auth: none) is refused without an assertion", np)
				}
			}
		}
	}
}
