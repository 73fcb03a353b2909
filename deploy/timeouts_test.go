package deploy_test

import (
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/authgate/authgate/internal/config"
)

// TestCheckTimeoutBelowProxyTimeouts reads CHECK_TIMEOUT as the shipped manifests set it, not only its default: extauthz must
// answer (503 auth_unavailable, with its JSON body) before Envoy or the Istio gateway gives up on the Check.
func TestCheckTimeoutBelowProxyTimeouts(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	envoyTimeout := unpack[*extauthzv3.ExtAuthz](t, "ext_authz", hcm.GetHttpFilters()[httpFilterIndex(hcm, extAuthzFilter)].GetTypedConfig()).
		GetGrpcService().GetTimeout().AsDuration()
	var mesh meshv1alpha1.MeshConfig
	decodeProtoYAML(t, "envoy/istio/meshconfig.yaml", repoFile(t, "envoy/istio/meshconfig.yaml"), &mesh)
	var istioTimeout time.Duration
	for _, p := range mesh.GetExtensionProviders() {
		if p.GetName() == extauthzProvider {
			istioTimeout = p.GetEnvoyExtAuthzGrpc().GetTimeout().AsDuration()
		}
	}

	for dir, proxy := range map[string]struct {
		name    string
		timeout time.Duration
	}{"overlays/envoy": {"envoy.yaml's ext_authz", envoyTimeout}, "overlays/istio": {"the Istio provider", istioTimeout}} {
		m := render(t, dir)
		c, _ := authgateContainer(t, m.deployments["extauthz"].Spec.Template.Spec)
		env, _ := envOf(t, m, c)
		cfg, _, err := config.LoadExtauthz(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		if cfg.CheckTimeout >= proxy.timeout {
			t.Errorf("%s: CHECK_TIMEOUT %v is not below %s timeout %v", dir, cfg.CheckTimeout, proxy.name, proxy.timeout)
		}
	}
}
