package extauthz

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/authgate/authgate/internal/pipeline"
)

// tracerName names NewServer's default tracer, taken from the global provider; Start uses the process's own.
const tracerName = "github.com/authgate/authgate/internal/extauthz"

// startCheckSpan opens the span of one Check. Its parent is the gRPC call's span when the server is instrumented, else the
// W3C trace context of the proxied request itself (Envoy passes the client's traceparent in the request headers), so a
// Check joins the caller's trace either way.
func (s *Server) startCheckSpan(ctx context.Context, req pipeline.Request) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(req.Headers))
	}
	return s.tracer.Start(ctx, "extauthz.Check", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", req.Method)))
}

// endCheckSpan records the decision: the route (a low-cardinality name, never the path with its ids) and the outcome.
func endCheckSpan(span trace.Span, d pipeline.Decision) {
	outcome, status := "allow", 200
	if !d.Allow {
		outcome, status = string(d.Code), d.Status
	}
	route := d.Route
	if route == "" {
		route = "none"
	}
	span.SetAttributes(
		attribute.String("authgate.route", route),
		attribute.String("authgate.decision", outcome),
		attribute.Int("http.response.status_code", status),
	)
	if status >= 500 {
		span.SetStatus(codes.Error, outcome)
	}
}
