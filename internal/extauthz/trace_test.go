package extauthz

import (
	"context"
	"io"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/authgate/authgate/internal/pipeline"
)

type fixedChecker pipeline.Decision

func (c fixedChecker) Check(context.Context, pipeline.Request) pipeline.Decision {
	return pipeline.Decision(c)
}

func TestCheckSpanJoinsTheCallersTraceAndRecordsTheDecision(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	srv := NewServer(fixedChecker{Status: 429, Code: pipeline.CodeRateLimited, Route: "app_run"},
		slog.New(slog.NewTextHandler(io.Discard, nil)), 0)
	srv.tracer = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter)).Tracer("test")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	srv.roundTrip(t, envoyRequest("POST", "/openapi/v1/apps/x/run",
		map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, "10.0.0.1:1234"))
	spans := exporter.GetSpans()
	if len(spans) != 1 || spans[0].Name != "extauthz.Check" {
		t.Fatalf("spans: %v", spans)
	}
	s := spans[0]
	if s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("the Check span is not a child of the request's traceparent: trace %s parent %s",
			s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["authgate.route"] != "app_run" || attrs["authgate.decision"] != "rate_limited" ||
		attrs["http.response.status_code"] != "429" {
		t.Errorf("span attributes %v", attrs)
	}
}
