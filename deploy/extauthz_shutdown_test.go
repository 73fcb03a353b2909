package deploy_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/authgate/authgate/internal/extauthz"
)

// healthCheckDropTime is the longest an active health checker takes to drop a host that has just started failing: the
// first failing check comes up to an interval later, each later one an interval after that, and the last may take its
// timeout to fail.
func healthCheckDropTime(interval, timeout time.Duration, unhealthyThreshold uint32) time.Duration {
	return time.Duration(unhealthyThreshold)*interval + timeout
}

// renderAny renders an overlay with the renderer that knows its kinds: the Gateway API overlays need their own.
func renderAny(t *testing.T, dir string) *manifests {
	t.Helper()
	for _, d := range gatewayAPIDirs {
		if d == dir {
			return renderGatewayAPI(t, dir).manifests
		}
	}
	return render(t, dir)
}

// envoyExtauthzHealthCheck is the active health check of envoy.yaml's extauthz cluster.
func envoyExtauthzHealthCheck(t *testing.T) *corev3.HealthCheck {
	t.Helper()
	hcs := clusterByName(t, loadBootstrap(t), "extauthz").GetHealthChecks()
	if len(hcs) != 1 {
		t.Fatalf("cluster extauthz: want one active health check, got %d", len(hcs))
	}
	return hcs[0]
}

// TestExtauthzDrainOutlastsHealthChecks: once stopping, extauthz reports NOT_SERVING and keeps answering Checks for
// SHUTDOWN_DRAIN_DELAY. That must outlast the active health checks that drop it from the proxies' rotation (envoy.yaml's
// extauthz cluster, Envoy Gateway's SecurityPolicy), or the proxies send Checks to a replica that refuses them: 503s on
// every rollout.
func TestExtauthzDrainOutlastsHealthChecks(t *testing.T) {
	hc := envoyExtauthzHealthCheck(t)
	// Envoy checks a host it sends nothing to every no_traffic_interval, and adds the configured jitter to each interval.
	interval := max(hc.GetInterval().AsDuration(), hc.GetNoTrafficInterval().AsDuration()) + hc.GetIntervalJitter().AsDuration() +
		hc.GetInterval().AsDuration()*time.Duration(hc.GetIntervalJitterPercent())/100
	drops := map[string]time.Duration{
		"envoy.yaml's extauthz cluster": healthCheckDropTime(interval, hc.GetTimeout().AsDuration(), hc.GetUnhealthyThreshold().GetValue()),
	}
	if hc.GetGrpcHealthCheck() == nil || hc.GetGrpcHealthCheck().GetServiceName() != "" {
		t.Errorf("cluster extauthz: want a gRPC health check of the overall status (no service_name), which Shutdown sets "+
			"NOT_SERVING; got %v", hc.GetHealthChecker())
	}

	gw := renderGatewayAPI(t, envoyGatewayDir)
	_, ea := envoyGatewayExtAuth(t, gw)
	if a := ea.GRPC.BackendSettings.HealthCheck.Active; a != nil {
		parse := func(d *string) time.Duration {
			if d == nil {
				t.Fatal("Envoy Gateway's active health check: want an explicit interval and timeout")
			}
			v, err := time.ParseDuration(*d)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		drops["Envoy Gateway's SecurityPolicy"] = healthCheckDropTime(parse((*string)(a.Interval)), parse((*string)(a.Timeout)),
			derefOr(a.UnhealthyThreshold, 3))
	}

	for _, dir := range append([]string{"overlays/envoy", "overlays/istio"}, gatewayAPIDirs...) {
		m := renderAny(t, dir)
		drain := extauthzConfig(t, m).ShutdownDrainDelay
		for proxy, drop := range drops {
			if drain < drop {
				t.Errorf("%s: SHUTDOWN_DRAIN_DELAY %v ends before %s can have dropped the replica (%v)", dir, drain, proxy, drop)
			}
		}
	}
}

// TestExtauthzGracePeriodCoversShutdown: the kubelet kills the pod terminationGracePeriodSeconds after it starts stopping
// it, preStop hook included. The preStop pause, the drain and SHUTDOWN_TIMEOUT for the Checks in flight must all fit, with
// a moment to exit.
func TestExtauthzGracePeriodCoversShutdown(t *testing.T) {
	const exitMargin = 2 * time.Second
	for _, dir := range append(append([]string{}, renderedDirs...), gatewayAPIDirs...) {
		m := renderAny(t, dir)
		pod := m.deployments["extauthz"].Spec.Template.Spec
		c, _ := authgateContainer(t, pod)
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			if c.Lifecycle.PreStop.Sleep == nil {
				t.Fatalf("%s: extauthz's preStop hook: want a sleep, whose length this test can add up", dir)
			}
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		cfg := extauthzConfig(t, m)
		need := preStop + cfg.ShutdownDrainDelay + cfg.ShutdownTimeout + exitMargin
		if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < need {
			t.Errorf("%s: terminationGracePeriodSeconds %v: the preStop pause (%v), SHUTDOWN_DRAIN_DELAY (%v) and "+
				"SHUTDOWN_TIMEOUT (%v) need %v", dir, g, preStop, cfg.ShutdownDrainDelay, cfg.ShutdownTimeout, need)
		}
	}
}

// TestEnvoyKeepaliveWithinExtauthzPolicy: Envoy pings each connection to extauthz, idle or not; pinging more often than
// extauthz's keepalive policy allows gets the connection closed with GOAWAY too_many_pings, and the Checks racing that
// with 503s.
func TestEnvoyKeepaliveWithinExtauthzPolicy(t *testing.T) {
	ext := clusterByName(t, loadBootstrap(t), "extauthz")
	opts := unpack[*upstreamhttpv3.HttpProtocolOptions](t, "extauthz protocol options",
		ext.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
	ka := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
	if ka == nil {
		t.Fatal("cluster extauthz: no connection_keepalive; a dead replica's connection would be noticed only by the Checks on it")
	}
	// Envoy adds its jitter (interval_jitter, default 15 %) to the interval, so the interval is the shortest gap.
	if iv := ka.GetInterval().AsDuration(); iv < extauthz.KeepaliveMinTime {
		t.Errorf("connection_keepalive interval %v is below extauthz's KeepaliveMinTime %v", iv, extauthz.KeepaliveMinTime)
	}
}
