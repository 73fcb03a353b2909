package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// withGitHubSignIn renders an overlay with components/github-sign-in added, as an operator turning GitHub sign-in on
// would, and returns its NetworkPolicies and the pod labels of each workload.
func withGitHubSignIn(t *testing.T, overlay string) (map[string]*networkingv1.NetworkPolicy, map[string]labels.Set) {
	t.Helper()
	dir := t.TempDir()
	// Kustomize takes no absolute roots: the test kustomization names the shipped ones relative to itself.
	rel := func(p string) string {
		a, err := filepath.Abs(filepath.Join("k8s", p))
		if err == nil {
			a, err = filepath.Rel(dir, a)
		}
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	kustomization := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\ncomponents:\n- %s\n",
		rel(overlay), rel("components/github-sign-in"))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s + components/github-sign-in: %v", overlay, err)
	}
	policies := map[string]*networkingv1.NetworkPolicy{}
	deployments, jobs := map[string]*appsv1.Deployment{}, map[string]*batchv1.Job{}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		name := overlay + "+github: " + res.GetKind() + " " + res.GetName()
		switch res.GetKind() {
		case "NetworkPolicy":
			decodeInto(t, name, y, policies)
		case "Deployment":
			decodeInto(t, name, y, deployments)
		case "Job":
			decodeInto(t, name, y, jobs)
		}
	}
	pods := map[string]labels.Set{}
	for name, d := range deployments {
		pods[name] = d.Spec.Template.Labels
	}
	for name, j := range jobs {
		pods[name] = j.Spec.Template.Labels
	}
	return policies, pods
}

// TestGitHubSignInComponent: the component lets deviceflow, and only deviceflow, reach HTTPS on public addresses (GitHub),
// and nothing in the cluster's private ranges.
func TestGitHubSignInComponent(t *testing.T) {
	for _, overlay := range []string{"overlays/envoy", "overlays/istio"} {
		policies, pods := withGitHubSignIn(t, overlay)
		np := policies["deviceflow-github"]
		if np == nil {
			t.Fatalf("%s: the component adds no NetworkPolicy deviceflow-github", overlay)
		}
		for name, podLabels := range pods {
			if selects(t, &np.Spec.PodSelector, podLabels) != (name == "deviceflow") {
				t.Errorf("%s: deviceflow-github selects %s: %v, want %v", overlay, name, name != "deviceflow", name == "deviceflow")
			}
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}) || len(np.Spec.Ingress) != 0 {
			t.Errorf("%s: deviceflow-github must only add egress", overlay)
		}
		for _, rule := range np.Spec.Egress {
			if len(rule.To) == 0 || len(rule.Ports) != 1 || rule.Ports[0].Port.IntVal != 443 ||
				rule.Ports[0].Protocol == nil || *rule.Ports[0].Protocol != corev1.ProtocolTCP {
				t.Errorf("%s: egress rule %+v is not HTTPS to named addresses", overlay, rule)
			}
			for _, peer := range rule.To {
				if peer.IPBlock == nil {
					continue
				}
				for _, private := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} {
					if !slices.Contains(peer.IPBlock.Except, private) {
						t.Errorf("%s: deviceflow-github lets deviceflow reach %s", overlay, private)
					}
				}
			}
		}
	}
}
