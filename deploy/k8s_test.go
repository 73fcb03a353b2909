package deploy_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"

	"github.com/authgate/authgate/internal/clientip"
	"github.com/authgate/authgate/internal/config"
)

// manifests is one rendered kustomization, every object decoded into its Kubernetes (or Istio) type.
type manifests struct {
	dir             string
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts map[string]*corev1.ServiceAccount
	pdbs            map[string]*policyv1.PodDisruptionBudget
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	networkPolicies map[string]*networkingv1.NetworkPolicy
	jobs            map[string]*batchv1.Job
	istio           []istioObject
}

// istioObject is an Istio custom resource; its spec is decoded by istio_test.go into istio.io/api's type.
type istioObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`
}

var (
	renderedMu sync.Mutex
	rendered   = map[string]*manifests{} // only renders that raised no error, so each test still sees a failure
)

// render builds a kustomization under deploy/k8s as `kubectl apply -k` would and decodes every object strictly.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	renderedMu.Lock()
	defer renderedMu.Unlock()
	if m, ok := rendered[dir]; ok {
		return m
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), path.Join("k8s", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/%s: %v", dir, err)
	}
	m := &manifests{
		dir:             dir,
		deployments:     map[string]*appsv1.Deployment{},
		services:        map[string]*corev1.Service{},
		configMaps:      map[string]*corev1.ConfigMap{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		pdbs:            map[string]*policyv1.PodDisruptionBudget{},
		hpas:            map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		networkPolicies: map[string]*networkingv1.NetworkPolicy{},
		jobs:            map[string]*batchv1.Job{},
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
			decodeInto(t, name, y, m.deployments)
		case "v1/Service":
			decodeInto(t, name, y, m.services)
		case "v1/ConfigMap":
			decodeInto(t, name, y, m.configMaps)
		case "v1/ServiceAccount":
			decodeInto(t, name, y, m.serviceAccounts)
		case "policy/v1/PodDisruptionBudget":
			decodeInto(t, name, y, m.pdbs)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			decodeInto(t, name, y, m.hpas)
		case "networking.k8s.io/v1/NetworkPolicy":
			decodeInto(t, name, y, m.networkPolicies)
		case "batch/v1/Job":
			decodeInto(t, name, y, m.jobs)
		case "security.istio.io/v1/AuthorizationPolicy", "networking.istio.io/v1/DestinationRule", "networking.istio.io/v1/VirtualService",
			"networking.istio.io/v1alpha3/EnvoyFilter":
			var o istioObject
			strictYAML(t, name, y, &o)
			decodeIstioSpec(t, name, o)
			m.istio = append(m.istio, o)
		default:
			t.Errorf("%s: no schema to check it against", name)
		}
	}
	if !t.Failed() {
		rendered[dir] = m
	}
	return m
}

// object is what every k8s.io/api object pointer is.
type object[T any] interface {
	*T
	GetName() string
	GetNamespace() string
}

func decodeInto[T any, P object[T]](t *testing.T, name string, y []byte, into map[string]P) {
	t.Helper()
	var o T
	strictYAML(t, name, y, &o)
	p := P(&o)
	if p.GetNamespace() == "" {
		t.Errorf("%s has no namespace", name)
	}
	into[p.GetName()] = p
}

var renderedDirs = []string{"base", "overlays/envoy", "overlays/istio"}

func TestManifestsRenderIntoKubernetesTypes(t *testing.T) {
	for _, dir := range renderedDirs {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			for _, name := range []string{"extauthz", "deviceflow"} {
				if m.deployments[name] == nil || m.services[name] == nil || m.pdbs[name] == nil || m.hpas[name] == nil || m.serviceAccounts[name] == nil {
					t.Errorf("%s: want a Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler and ServiceAccount", name)
				}
			}
			if m.jobs["authgate-migrate"] == nil {
				t.Error("no migration Job authgate-migrate")
			}
		})
	}
}

func TestWorkloadsAreHardened(t *testing.T) {
	for _, dir := range renderedDirs {
		m := render(t, dir)
		pods := map[string]corev1.PodSpec{}
		for name, d := range m.deployments {
			pods["Deployment "+name] = d.Spec.Template.Spec
		}
		for name, j := range m.jobs {
			pods["Job "+name] = j.Spec.Template.Spec
		}
		for what, pod := range pods {
			where := dir + ": " + what
			if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				t.Errorf("%s: pod must set runAsNonRoot", where)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Errorf("%s: no service account token is needed; set automountServiceAccountToken: false", where)
			}
			if sa := pod.ServiceAccountName; sa == "" || m.serviceAccounts[sa] == nil {
				t.Errorf("%s: service account %q is not in the manifests", where, sa)
			}
			for _, c := range pod.Containers {
				where := where + " container " + c.Name
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: want a read-only root filesystem, no privilege escalation and every capability dropped", where)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("%s: want CPU and memory requests and a memory limit, got %v", where, c.Resources)
				}
				if _, tag, ok := strings.Cut(path.Base(c.Image), ":"); !ok || tag == "" || tag == "latest" {
					t.Errorf("%s: image %q has no pinned tag", where, c.Image)
				}
			}
		}
	}
}

// authgateContainer finds the one container of a Deployment that runs an authgate image, and which service it is.
func authgateContainer(t *testing.T, pod corev1.PodSpec) (corev1.Container, string) {
	t.Helper()
	for _, c := range pod.Containers {
		if repo, _, _ := strings.Cut(c.Image, ":"); strings.HasPrefix(repo, "ghcr.io/authgate/") {
			return c, strings.TrimPrefix(repo, "ghcr.io/authgate/")
		}
	}
	t.Fatal("no ghcr.io/authgate/ container")
	return corev1.Container{}, ""
}

func containerPort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func TestProbesUseTheAdminPort(t *testing.T) {
	for _, dir := range renderedDirs {
		m := render(t, dir)
		for _, name := range []string{"extauthz", "deviceflow"} {
			c, _ := authgateContainer(t, m.deployments[name].Spec.Template.Spec)
			for _, probe := range []struct {
				kind string
				p    *corev1.Probe
				path string
			}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
				if probe.p == nil || probe.p.HTTPGet == nil {
					t.Errorf("%s %s: no HTTP %s probe", dir, name, probe.kind)
					continue
				}
				if got := probe.p.HTTPGet.Path; got != probe.path || containerPort(c, probe.p.HTTPGet.Port) != 9090 {
					t.Errorf("%s %s: %s probe %s on port %v, want %s on the admin port 9090", dir, name, probe.kind, got, probe.p.HTTPGet.Port.String(), probe.path)
				}
			}
		}
	}
}

func TestServicesReachTheirPods(t *testing.T) {
	for _, dir := range renderedDirs {
		m := render(t, dir)
		for name, svc := range m.services {
			var backing *appsv1.Deployment
			for _, d := range m.deployments {
				if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
					backing = d
				}
			}
			if backing == nil {
				t.Errorf("%s: Service %s selects no Deployment's pods", dir, name)
				continue
			}
			for _, p := range svc.Spec.Ports {
				found := false
				for _, c := range backing.Spec.Template.Spec.Containers {
					found = found || containerPort(c, p.TargetPort) != 0
				}
				if !found {
					t.Errorf("%s: Service %s port %s targets %v, which no container of %s exposes", dir, name, p.Name, p.TargetPort.String(), backing.Name)
				}
			}
		}
		wantPorts := map[string][]corev1.ServicePort{
			"extauthz":   {{Name: "grpc", Port: 9191, AppProtocol: ptr("grpc")}, {Name: "admin", Port: 9090}},
			"deviceflow": {{Name: "http", Port: 8080}, {Name: "admin", Port: 9090}},
		}
		for name, want := range wantPorts {
			for _, w := range want {
				i := slices.IndexFunc(m.services[name].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == w.Name })
				if i < 0 {
					t.Errorf("%s: Service %s has no port %s", dir, name, w.Name)
					continue
				}
				got := m.services[name].Spec.Ports[i]
				if got.Port != w.Port || (w.AppProtocol != nil && deref(got.AppProtocol) != *w.AppProtocol) {
					t.Errorf("%s: Service %s port %s = %d appProtocol %q, want %d %q", dir, name, w.Name, got.Port, deref(got.AppProtocol), w.Port, deref(w.AppProtocol))
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestDisruptionBudgetsAndAutoscalers(t *testing.T) {
	for _, dir := range renderedDirs {
		m := render(t, dir)
		for name, d := range m.deployments {
			covered := false
			for _, pdb := range m.pdbs {
				sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				if err != nil {
					t.Fatal(err)
				}
				if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
					covered = true
					if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
						t.Errorf("%s: PodDisruptionBudget %s sets no budget", dir, pdb.Name)
					}
				}
			}
			if !covered {
				t.Errorf("%s: Deployment %s has no PodDisruptionBudget", dir, name)
			}
		}
		for _, name := range []string{"extauthz", "deviceflow"} {
			hpa := m.hpas[name]
			ref := hpa.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || m.deployments[ref.Name] == nil || ref.Name != name {
				t.Errorf("%s: HorizontalPodAutoscaler %s targets %s %s", dir, name, ref.Kind, ref.Name)
			}
			if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas || len(hpa.Spec.Metrics) == 0 {
				t.Errorf("%s: HorizontalPodAutoscaler %s: want at least 2 replicas (survives one disruption) and a metric", dir, name)
			}
			if m.deployments[name].Spec.Replicas != nil {
				t.Errorf("%s: Deployment %s sets replicas, which every apply would reset under the autoscaler", dir, name)
			}
		}
	}
}

// envOf resolves a container's environment as the kubelet would; secret references resolve to a placeholder value, and
// optional references to objects outside the manifests (Dify's api ConfigMap and Secret) to nothing.
func envOf(t *testing.T, m *manifests, c corev1.Container) (env map[string]string, fromSecret map[string]bool) {
	t.Helper()
	return envWith(t, m, c, nil)
}

// envWith is envOf with objects from outside the manifests, keyed "ConfigMap/name" or "Secret/name". A secretKeyRef to a
// Secret given there resolves to its value, or to nothing when the key is missing and the reference optional.
func envWith(t *testing.T, m *manifests, c corev1.Container, external map[string]map[string]string) (env map[string]string, fromSecret map[string]bool) {
	t.Helper()
	env, fromSecret = map[string]string{}, map[string]bool{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil && ef.SecretRef.Optional != nil && *ef.SecretRef.Optional:
			for k, v := range external["Secret/"+ef.SecretRef.Name] {
				env[k] = v
				fromSecret[k] = true
			}
			continue
		case ef.ConfigMapRef == nil:
			t.Errorf("%s: envFrom only from ConfigMaps (and, optionally, Dify's Secret); authgate's secrets by explicit secretKeyRef", c.Name)
			continue
		}
		cm := m.configMaps[ef.ConfigMapRef.Name]
		if cm == nil {
			if ext, ok := external["ConfigMap/"+ef.ConfigMapRef.Name]; ok || (ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional) {
				for k, v := range ext {
					env[k] = v
					delete(fromSecret, k)
				}
				continue
			}
			t.Errorf("%s: envFrom ConfigMap %s is not in the manifests", c.Name, ef.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			env[k] = v
			delete(fromSecret, k)
		}
	}
	fromEnvFrom := maps.Clone(env)
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			t.Errorf("%s: %s is set twice", c.Name, e.Name)
		}
		seen[e.Name] = true
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if _, inConfigMap := fromEnvFrom[e.Name]; inConfigMap && !fromSecret[e.Name] {
				t.Errorf("%s: secret %s also has a value in a ConfigMap", c.Name, e.Name)
			}
			v, ok := "from-secret-"+ref.Key+"-placeholder", true // long enough for deviceflow's SECRET_KEY check
			if secret, given := external["Secret/"+ref.Name]; given {
				v, ok = secret[ref.Key]
			}
			switch {
			case ok:
				env[e.Name] = v
				fromSecret[e.Name] = true
			case ref.Optional == nil || !*ref.Optional:
				t.Errorf("%s: %s: Secret %s has no key %s", c.Name, e.Name, ref.Name, ref.Key)
			}
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			data := external["ConfigMap/"+ref.Name]
			if cm := m.configMaps[ref.Name]; cm != nil {
				data = cm.Data
			}
			v, ok := data[ref.Key]
			switch {
			case ok:
				env[e.Name] = v
			case ref.Optional == nil || !*ref.Optional:
				t.Errorf("%s: %s: ConfigMap %s has no key %s", c.Name, e.Name, ref.Name, ref.Key)
			}
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		default:
			t.Errorf("%s: %s: unexpected valueFrom", c.Name, e.Name)
		}
	}
	return env, fromSecret
}

// loaders are the services' own configuration loaders: what they read is the ground truth for the manifests.
var loaders = map[string]func(config.Lookup) error{
	"extauthz": func(l config.Lookup) error {
		_, _, err := config.LoadExtauthz(l)
		return err
	},
	"deviceflow": func(l config.Lookup) error {
		_, _, err := config.LoadDeviceflow(l)
		return err
	},
	// The subcommands that only maintain the database.
	"deviceflow migrate": func(l config.Lookup) error {
		_, err := config.LoadMaintenance(l)
		return err
	},
}

// program names what a container runs as loaders and secrets key it: the service, then its subcommand if any.
func program(c corev1.Container, service string) string {
	if args := append(slices.Clone(c.Command), c.Args...); len(args) > 1 {
		return service + " " + args[1]
	}
	return service
}

// loadWith runs a loader on env and returns every variable it looked up and its error, with env and with nothing set (a
// variable may be read only when another is set).
func loadWith(load func(config.Lookup) error, env map[string]string) (map[string]bool, error) {
	read := map[string]bool{}
	_ = load(func(name string) (string, bool) { read[name] = true; return "", false })
	err := load(func(name string) (string, bool) {
		read[name] = true
		v, ok := env[name]
		return v, ok
	})
	return read, err
}

func TestEnvironmentIsWhatAuthgateReads(t *testing.T) {
	secrets := map[string][]string{
		"extauthz":           {"DATABASE_URL", "REDIS_URL"},
		"deviceflow":         {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "GITHUB_CLIENT_SECRET"},
		"deviceflow migrate": {"DATABASE_URL"},
	}
	for _, dir := range renderedDirs {
		m := render(t, dir)
		containers := map[string]corev1.PodSpec{}
		for name, d := range m.deployments {
			if name == "extauthz" || name == "deviceflow" {
				containers["Deployment "+name] = d.Spec.Template.Spec
			}
		}
		for name, j := range m.jobs {
			containers["Job "+name] = j.Spec.Template.Spec
		}
		for what, pod := range containers {
			c, service := authgateContainer(t, pod)
			service = program(c, service)
			where := dir + ": " + what
			env, fromSecret := envOf(t, m, c)
			load := loaders[service]
			if load == nil {
				t.Errorf("%s: no loader for %s", where, service)
				continue
			}
			read, err := loadWith(load, env)
			if err != nil {
				t.Errorf("%s: %s would not start with this environment: %v", where, service, err)
			}
			var unknown []string
			for name := range env {
				if !read[name] {
					unknown = append(unknown, name)
				}
			}
			sort.Strings(unknown)
			if len(unknown) > 0 {
				t.Errorf("%s: %s never reads %v", where, service, unknown)
			}
			for _, name := range secrets[service] {
				if !fromSecret[name] {
					t.Errorf("%s: %s must come from a Secret (secretKeyRef), not a literal or a ConfigMap", where, name)
				}
			}
		}
	}
}

func TestTrustedProxyHops(t *testing.T) {
	for dir, want := range map[string]int{"base": 0, "overlays/envoy": 1, "overlays/istio": 1} {
		m := render(t, dir)
		c, _ := authgateContainer(t, m.deployments["deviceflow"].Spec.Template.Spec)
		env, _ := envOf(t, m, c)
		cfg, _, err := config.LoadDeviceflow(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TrustedProxyHops != want {
			t.Errorf("%s: deviceflow TRUSTED_PROXY_HOPS = %d, want %d", dir, cfg.TrustedProxyHops, want)
		}
	}
}

// TestTokenCacheTTLIsShared: deviceflow's revocation tombstones must outlive extauthz's cache entries, so both read the one
// value explicitly rather than each falling back on its own default.
func TestTokenCacheTTLIsShared(t *testing.T) {
	for _, dir := range renderedDirs {
		m := render(t, dir)
		values := map[string]string{}
		for _, name := range []string{"extauthz", "deviceflow"} {
			c, _ := authgateContainer(t, m.deployments[name].Spec.Template.Spec)
			env, _ := envOf(t, m, c)
			v, ok := env["TOKEN_CACHE_TTL"]
			if !ok {
				t.Errorf("%s: %s has no TOKEN_CACHE_TTL", dir, name)
			}
			values[name] = v
		}
		if values["extauthz"] != values["deviceflow"] {
			t.Errorf("%s: TOKEN_CACHE_TTL extauthz %q, deviceflow %q: want one value", dir, values["extauthz"], values["deviceflow"])
		}
	}
}

func TestMigrationJob(t *testing.T) {
	for _, dir := range renderedDirs {
		j := render(t, dir).jobs["authgate-migrate"]
		c, service := authgateContainer(t, j.Spec.Template.Spec)
		args := append(slices.Clone(c.Command), c.Args...)
		if service != "deviceflow" || len(args) != 2 || path.Base(args[0]) != "deviceflow" || args[1] != "migrate" {
			t.Errorf("%s: the migration Job runs %s %v, want `deviceflow migrate`", dir, service, args)
		}
		if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever || j.Spec.BackoffLimit == nil || j.Spec.ActiveDeadlineSeconds == nil {
			t.Errorf("%s: the migration Job needs restartPolicy Never, a backoffLimit and a deadline", dir)
		}
		// Only what LoadMaintenance reads (the database, by URL or Dify's DB_*, and LOG_LEVEL): Redis credentials and
		// SECRET_KEY have no business in this pod.
		read, _ := loadWith(loaders["deviceflow migrate"], nil)
		var names, extra []string
		for _, e := range c.Env {
			names = append(names, e.Name)
			if !read[e.Name] || strings.HasPrefix(e.Name, "REDIS_") || e.Name == "SECRET_KEY" {
				extra = append(extra, e.Name)
			}
		}
		if len(c.EnvFrom) != 0 || len(extra) != 0 || !slices.Contains(names, "DATABASE_URL") || !slices.Contains(names, "LOG_LEVEL") ||
			!slices.Contains(names, "DB_HOST") || !slices.Contains(names, "DB_PASSWORD") {
			t.Errorf("%s: the migration Job gets env %v (%v not for it) and envFrom %v, want what deviceflow migrate reads", dir,
				names, extra, c.EnvFrom)
		}
	}
	if ann := render(t, "overlays/istio").jobs["authgate-migrate"].Spec.Template.Annotations["sidecar.istio.io/inject"]; ann != "false" {
		t.Errorf("overlays/istio: a sidecar would keep the migration Job running; sidecar.istio.io/inject = %q", ann)
	}
}

// allowsIngress reports whether some NetworkPolicy selecting pod admits TCP traffic on port from a pod with fromLabels in the
// namespace fromNamespace.
func allowsIngress(t *testing.T, m *manifests, pod *appsv1.Deployment, port int32, fromNamespace string, fromLabels labels.Set) bool {
	t.Helper()
	for _, np := range m.networkPolicies {
		if !selects(t, &np.Spec.PodSelector, pod.Spec.Template.Labels) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if !portListed(rule.Ports, port) {
				continue
			}
			for _, peer := range rule.From {
				ns := peer.NamespaceSelector == nil && fromNamespace == np.Namespace ||
					peer.NamespaceSelector != nil && selects(t, peer.NamespaceSelector, labels.Set{"kubernetes.io/metadata.name": fromNamespace})
				if ns && (peer.PodSelector == nil || selects(t, peer.PodSelector, fromLabels)) {
					return true
				}
			}
		}
	}
	return false
}

func selects(t *testing.T, s *metav1.LabelSelector, l labels.Set) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel.Matches(l)
}

func portListed(ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Port != nil && p.Port.IntVal == port && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
			return true
		}
	}
	return false
}

func TestNetworkPolicies(t *testing.T) {
	proxies := map[string]struct {
		namespace string
		labels    labels.Set
	}{
		"overlays/envoy": {"authgate", labels.Set{"app.kubernetes.io/name": "authgate-envoy"}},
		"overlays/istio": {"istio-system", labels.Set{"istio": "ingressgateway"}},
	}
	for _, dir := range renderedDirs {
		m := render(t, dir)
		pods := map[string]labels.Set{"migrate": m.jobs["authgate-migrate"].Spec.Template.Labels}
		for _, name := range []string{"extauthz", "deviceflow"} {
			pods[name] = m.deployments[name].Spec.Template.Labels
		}
		for name, podLabels := range pods {
			var ingress, egress bool
			var egressPorts []int32
			for _, np := range m.networkPolicies {
				if !selects(t, &np.Spec.PodSelector, podLabels) {
					continue
				}
				for _, pt := range np.Spec.PolicyTypes {
					ingress = ingress || pt == networkingv1.PolicyTypeIngress
					egress = egress || pt == networkingv1.PolicyTypeEgress
				}
				for _, rule := range np.Spec.Ingress {
					for _, peer := range rule.From {
						if peer.IPBlock != nil || (peer.PodSelector == nil && peer.NamespaceSelector == nil) {
							t.Errorf("%s: NetworkPolicy %s admits %s traffic from outside named pods", dir, np.Name, name)
						}
					}
					if len(rule.From) == 0 {
						t.Errorf("%s: NetworkPolicy %s admits %s traffic from anywhere", dir, np.Name, name)
					}
				}
				for _, rule := range np.Spec.Egress {
					if len(rule.To) == 0 {
						t.Errorf("%s: NetworkPolicy %s lets %s reach anywhere", dir, np.Name, name)
					}
					for _, p := range rule.Ports {
						egressPorts = append(egressPorts, p.Port.IntVal)
					}
				}
			}
			if !ingress || !egress {
				t.Errorf("%s: %s pods need NetworkPolicies for both ingress and egress (have ingress=%v egress=%v)", dir, name, ingress, egress)
			}
			for _, port := range []int32{53, 5432, 6379} {
				if !slices.Contains(egressPorts, port) {
					t.Errorf("%s: %s pods cannot reach port %d (DNS, Postgres, Redis)", dir, name, port)
				}
			}
		}
		for _, name := range []string{"extauthz", "deviceflow"} {
			if !allowsIngress(t, m, m.deployments[name], 9090, "monitoring", labels.Set{"app.kubernetes.io/name": "prometheus"}) {
				t.Errorf("%s: Prometheus cannot scrape %s", dir, name)
			}
			if allowsIngress(t, m, m.deployments[name], 9191, "dify", labels.Set{"app.kubernetes.io/name": "api"}) {
				t.Errorf("%s: %s accepts traffic from an arbitrary pod", dir, name)
			}
		}
		if proxy, ok := proxies[dir]; ok {
			if !allowsIngress(t, m, m.deployments["extauthz"], 9191, proxy.namespace, proxy.labels) {
				t.Errorf("%s: the proxy cannot call extauthz on 9191", dir)
			}
			if !allowsIngress(t, m, m.deployments["deviceflow"], 8080, proxy.namespace, proxy.labels) {
				t.Errorf("%s: the proxy cannot reach deviceflow on 8080", dir)
			}
		}
	}
}

func TestEnvoyOverlayRunsTheShippedConfig(t *testing.T) {
	m := render(t, "overlays/envoy")
	d := m.deployments["authgate-envoy"]
	if d == nil {
		t.Fatal("overlays/envoy has no authgate-envoy Deployment")
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if want := "docker.io/envoyproxy/envoy:" + moduleVersion(t, "github.com/envoyproxy/go-control-plane/envoy"); c.Image != want {
		t.Errorf("envoy image %s: want %s, the release whose API these tests validate envoy.yaml against", c.Image, want)
	}
	mountDir := ""
	var configMap *corev1.ConfigMap
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				mountDir, configMap = vm.MountPath, m.configMaps[v.ConfigMap.Name]
			}
		}
	}
	if configMap == nil {
		t.Fatal("the Envoy container mounts no ConfigMap from the manifests")
	}
	if configMap.Data["envoy.yaml"] != string(repoFile(t, "envoy/envoy.yaml")) {
		t.Error("the mounted ConfigMap is not envoy/envoy.yaml")
	}
	if i := slices.Index(c.Args, "--config-path"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != path.Join(mountDir, "envoy.yaml") {
		t.Errorf("envoy runs with %v; want --config-path %s", c.Args, path.Join(mountDir, "envoy.yaml"))
	}

	// The ports envoy.yaml listens on are the ones the pod exposes and probes.
	b := loadBootstrap(t)
	listens := map[int32]bool{}
	for _, l := range b.GetStaticResources().GetListeners() {
		listens[int32(l.GetAddress().GetSocketAddress().GetPortValue())] = true
	}
	for _, p := range c.Ports {
		if !listens[p.ContainerPort] {
			t.Errorf("container port %s %d: envoy.yaml has no listener there", p.Name, p.ContainerPort)
		}
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || !listens[containerPort(c, c.ReadinessProbe.HTTPGet.Port)] {
		t.Error("the Envoy readiness probe must hit a listener of envoy.yaml")
	}

	for _, rm := range b.GetOverloadManager().GetResourceMonitors() {
		if heap, ok := unpackIfType[*fixedheapv3.FixedHeapConfig](t, rm.GetTypedConfig()); ok {
			if limit := c.Resources.Limits.Memory().Value(); uint64(limit) <= heap.GetMaxHeapSizeBytes() {
				t.Errorf("Envoy's heap bound %d must stay below the container's memory limit %d, or the kubelet kills it first", heap.GetMaxHeapSizeBytes(), limit)
			}
		}
	}

	// envoy.yaml's extauthz cluster resolves the headless Service, so Envoy sees every replica.
	h := m.services["extauthz-headless"]
	if h == nil || h.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Fatal("overlays/envoy needs the headless Service extauthz-headless")
	}
	if pub := m.services["authgate-envoy"]; pub == nil || pub.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Error("the public Service must keep the client address (externalTrafficPolicy: Local) for use_remote_address")
	}
	for _, cl := range b.GetStaticResources().GetClusters() {
		for _, le := range cl.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				name, ns, _ := strings.Cut(strings.TrimSuffix(sa.GetAddress(), ".svc.cluster.local"), ".")
				if ns != "authgate" {
					continue // Dify's own Service
				}
				svc := m.services[name]
				if svc == nil || svc.Namespace != ns || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(sa.GetPortValue()) }) {
					t.Errorf("envoy cluster %s: %s:%d is no Service port in the manifests", cl.GetName(), sa.GetAddress(), sa.GetPortValue())
				}
			}
		}
	}
}

// moduleVersion is the version of a dependency that go.mod requires.
func moduleVersion(t *testing.T, module string) string {
	t.Helper()
	for _, line := range strings.Split(string(repoFile(t, "go.mod")), "\n") {
		code, _, _ := strings.Cut(line, "//")
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(code), "require "))
		if len(f) == 2 && f[0] == module {
			return f[1]
		}
	}
	t.Fatalf("go.mod does not require %s", module)
	return ""
}

// TestTrustedProxyHopsAreOneValueForBothServices: extauthz (invalid-bearer budget) and deviceflow (its limits) both count
// requests per client address, read TRUSTED_PROXY_HOPS entries from the right of X-Forwarded-For. Each overlay sets one value
// for both, the number of proxies in front that append to the header. Behind it, both derive the client's address, whatever
// a client writes into the header itself; extauthz falls back on Envoy's TCP peer, which behind a load balancer is the
// balancer, so a wrong value would put every client in one budget.
func TestTrustedProxyHopsAreOneValueForBothServices(t *testing.T) {
	hcm := publicHCM(t, loadBootstrap(t))
	if !hcm.GetUseRemoteAddress().GetValue() {
		t.Fatal("envoy.yaml: use_remote_address must be true: Envoy then appends the address it accepted")
	}
	// Proxies that append to X-Forwarded-For before the request reaches authgate's services: the trusted hops in front of
	// Envoy, then Envoy itself; for the gateways, the gateway.
	appending := map[string]int{
		"base":           0,
		"overlays/envoy": int(hcm.GetXffNumTrustedHops()) + 1,
		"overlays/istio": 1,
	}
	overlays := map[string]*manifests{}
	for dir := range appending {
		overlays[dir] = render(t, dir)
	}
	for _, dir := range gatewayAPIDirs {
		appending[dir], overlays[dir] = 1, renderGatewayAPI(t, dir).manifests
	}

	const client, forged = "203.0.113.7", "198.51.100.1"
	for dir, proxies := range appending {
		m := overlays[dir]
		hops := map[string]int{}
		for _, name := range []string{"extauthz", "deviceflow"} {
			c, _ := authgateContainer(t, m.deployments[name].Spec.Template.Spec)
			env, _ := envOf(t, m, c)
			lookup := func(n string) (string, bool) { v, ok := env[n]; return v, ok }
			var err error
			if name == "extauthz" {
				var cfg config.Extauthz
				cfg, _, err = config.LoadExtauthz(lookup)
				hops[name] = cfg.TrustedProxyHops
			} else {
				var cfg config.Deviceflow
				cfg, _, err = config.LoadDeviceflow(lookup)
				hops[name] = cfg.TrustedProxyHops
			}
			if err != nil {
				t.Fatalf("%s: %s would not start: %v", dir, name, err)
			}
		}
		if hops["extauthz"] != proxies || hops["deviceflow"] != proxies {
			t.Errorf("%s: TRUSTED_PROXY_HOPS extauthz %d, deviceflow %d: want both %d, the proxies that append to X-Forwarded-For",
				dir, hops["extauthz"], hops["deviceflow"], proxies)
			continue
		}
		if proxies == 0 {
			continue // nothing in front: the peer is the client
		}
		// The header as the services get it: what the client forged, then one entry per proxy, each the address it accepted
		// the request from (the client, then the proxy before it).
		xff := []string{forged, client}
		peer := client // of the last proxy: the address extauthz gets as the Check's source
		for i := 1; i < proxies; i++ {
			peer = fmt.Sprintf("10.0.0.%d", i)
			xff = append(xff, peer)
		}
		for name, from := range map[string]string{"extauthz": peer, "deviceflow": "10.1.0.1"} {
			if got := clientip.FromForwarded(from, strings.Join(xff, ", "), hops[name]); got.String() != client {
				t.Errorf("%s: %s takes %s for the client (X-Forwarded-For %v, peer %s), want %s", dir, name, got, xff, from, client)
			}
		}
	}
}
