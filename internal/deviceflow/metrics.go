package deviceflow

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are deviceflow's own instruments (exported as Prometheus by internal/telemetry); otelhttp adds the per-request ones.
type metrics struct {
	dependencyErrors metric.Int64Counter // authgate_deviceflow_dependency_errors_total{dependency}
	stateLost        metric.Int64Counter // authgate_deviceflow_device_state_lost_total
}

// newMetrics builds the instruments on m, or on the process's global meter provider (which telemetry.Setup installs).
func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = otel.GetMeterProvider().Meter("deviceflow")
	}
	var out metrics
	var err error
	if out.dependencyErrors, err = m.Int64Counter("authgate_deviceflow_dependency_errors",
		metric.WithDescription("Requests answered 503 temporarily_unavailable, by the dependency that failed (redis, postgres, "+
			"internal).")); err != nil {
		return nil, err
	}
	if out.stateLost, err = m.Int64Counter("authgate_deviceflow_device_state_lost",
		metric.WithDescription("Token polls for a device code that Redis no longer knows while its device-flow state is younger "+
			"than a code's lifetime: the login was probably lost with Redis's data.")); err != nil {
		return nil, err
	}
	return &out, nil
}

func (m *metrics) dependencyError(ctx context.Context, dep string) {
	m.dependencyErrors.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(attribute.String("dependency", dep)))
}

func (m *metrics) deviceStateLost(ctx context.Context) {
	m.stateLost.Add(context.WithoutCancel(ctx), 1)
}
