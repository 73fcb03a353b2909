// Package telemetry sets up the process's traces (OpenTelemetry, OTLP gRPC export), metrics (OpenTelemetry with
// the Prometheus exporter) and logs (slog JSON carrying the trace and span ids of the ctx).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Config selects exporters and log verbosity.
type Config struct {
	// OTLPEndpoint (OTEL_EXPORTER_OTLP_ENDPOINT) is where spans go over OTLP gRPC, as a URL ("http://collector:4317";
	// http means plaintext) or host:port (TLS). Empty: spans are still created, so log lines carry trace ids and
	// incoming trace context propagates, but nothing is exported.
	OTLPEndpoint string
	// LogLevel is debug, info (default when empty), warn or error.
	LogLevel string
	// LogOutput receives the JSON log lines; default os.Stderr.
	LogOutput io.Writer
}

// Telemetry holds the process's logger, meter and tracer. Setup also installs its providers and the W3C
// tracecontext propagator as the OpenTelemetry globals, so otelgrpc/otelhttp instrumentation uses them.
type Telemetry struct {
	Logger *slog.Logger
	Meter  metric.Meter
	Tracer trace.Tracer

	registry       *prometheus.Registry
	tracerProvider *sdktrace.TracerProvider
	meterProvider  *sdkmetric.MeterProvider
}

// Setup builds the providers for service (the service.name resource attribute and the tracer/meter name).
func Setup(ctx context.Context, service string, cfg Config) (*Telemetry, error) {
	out := cfg.LogOutput
	if out == nil {
		out = os.Stderr
	}
	logger, err := NewLogger(out, cfg.LogLevel)
	if err != nil {
		return nil, err
	}

	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	traceOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.OTLPEndpoint != "" {
		exporter, err := otlptracegrpc.New(ctx, endpointOption(cfg.OTLPEndpoint))
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
		traceOpts = append(traceOpts, sdktrace.WithBatcher(exporter))
	} else {
		// Nothing would export a recorded span. Unsampled spans still get trace and span ids (so log lines still carry
		// them) but skip recording attributes and events, which was ~4% of a warm Check's CPU.
		traceOpts = append(traceOpts, sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	tp := sdktrace.NewTracerProvider(traceOpts...)

	// An own registry rather than prometheus.DefaultRegisterer: /metrics shows exactly this process's series, and
	// two services in one process (devstack) do not collide.
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(promExporter))

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	return &Telemetry{
		Logger:         logger,
		Meter:          mp.Meter(service),
		Tracer:         tp.Tracer(service),
		registry:       registry,
		tracerProvider: tp,
		meterProvider:  mp,
	}, nil
}

// endpointOption accepts the endpoint the way OTEL_EXPORTER_OTLP_ENDPOINT is usually written (a URL) and the bare
// host:port form.
func endpointOption(endpoint string) otlptracegrpc.Option {
	if strings.Contains(endpoint, "://") {
		return otlptracegrpc.WithEndpointURL(endpoint)
	}
	return otlptracegrpc.WithEndpoint(endpoint)
}

// MetricsHandler serves the Prometheus exposition of this process's metrics.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Shutdown flushes pending spans and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.tracerProvider.Shutdown(ctx), t.meterProvider.Shutdown(ctx))
}
