package telemetry_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/testenv"
)

func setup(t *testing.T, out io.Writer) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(t.Context(), "authgate-test", telemetry.Config{LogLevel: "info", LogOutput: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(t.Context()) })
	return tel
}

func TestLogLineCarriesTraceID(t *testing.T) {
	var out testenv.LogBuffer
	tel := setup(t, &out)
	ctx, span := tel.Tracer.Start(t.Context(), "check")
	tel.Logger.InfoContext(ctx, "decided", "code", "ok")
	tel.Logger.With("component", "x").InfoContext(ctx, "derived logger")
	span.End()
	tel.Logger.InfoContext(t.Context(), "no span")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d log lines: %q", len(lines), lines)
	}
	want := span.SpanContext()
	for i, line := range lines[:2] {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v", i, err)
		}
		if rec["trace_id"] != want.TraceID().String() || rec["span_id"] != want.SpanID().String() {
			t.Fatalf("line %d = %s; want trace_id %s span_id %s", i, line, want.TraceID(), want.SpanID())
		}
	}
	if strings.Contains(lines[2], "trace_id") {
		t.Fatalf("line without a span carries a trace id: %s", lines[2])
	}
	if span.IsRecording() {
		t.Error("with no OTLP endpoint a span is recorded, which nothing would export")
	}
}

func TestSpansRecordedWithAnExporter(t *testing.T) {
	tel, err := telemetry.Setup(t.Context(), "authgate-test", telemetry.Config{OTLPEndpoint: "http://127.0.0.1:1", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer.Start(t.Context(), "check")
	recording := span.IsRecording()
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond) // the endpoint is closed: do not wait on export
	defer cancel()
	_ = tel.Shutdown(ctx)
	if !recording {
		t.Error("with an OTLP endpoint the span is not recorded")
	}
}

func TestLogLevel(t *testing.T) {
	var out testenv.LogBuffer
	tel, err := telemetry.Setup(t.Context(), "authgate-test", telemetry.Config{LogLevel: "warn", LogOutput: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(t.Context())
	tel.Logger.Info("dropped")
	tel.Logger.Warn("kept")
	if s := out.String(); strings.Contains(s, "dropped") || !strings.Contains(s, "kept") {
		t.Fatalf("log output at warn = %q", s)
	}
	if _, err := telemetry.Setup(t.Context(), "x", telemetry.Config{LogLevel: "loud"}); err == nil {
		t.Fatal("Setup accepted LOG_LEVEL=loud")
	}
}

func TestGlobalPropagatorIsTraceContext(t *testing.T) {
	tel := setup(t, io.Discard)
	ctx, span := tel.Tracer.Start(t.Context(), "outgoing")
	defer span.End()
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	if tp := carrier.Get("traceparent"); !strings.Contains(tp, span.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent = %q", tp)
	}
}

func TestMetricsShowCounter(t *testing.T) {
	tel := setup(t, io.Discard)
	counter, err := tel.Meter.Int64Counter("authgate_test_decisions")
	if err != nil {
		t.Fatal(err)
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("/metrics = %d", rec.Code)
		}
		return rec.Body.String()
	}
	if grep(scrape(), "authgate_test_decisions_total") != "" {
		t.Fatal("counter shown before any increment")
	}
	counter.Add(t.Context(), 3)
	lines := grep(scrape(), "authgate_test_decisions_total")
	if !strings.HasPrefix(lines, "authgate_test_decisions_total{") || !strings.HasSuffix(lines, "} 3") {
		t.Fatalf("/metrics after Add(3):\n%s", lines)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestAdminHandler(t *testing.T) {
	var ready atomic.Bool
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "m 1\n") })
	srv := httptest.NewServer(telemetry.AdminHandler(ready.Load, metrics))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before ready = %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz when ready = %d, want 200", code)
	}
	ready.Store(false)
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after losing readiness = %d, want 503", code)
	}
	if code, body := get("/metrics"); code != http.StatusOK || body != "m 1\n" {
		t.Fatalf("/metrics = %d %q", code, body)
	}
	if code, body := get("/nope"); code != http.StatusNotFound || !strings.Contains(body, `"error":"not_found"`) {
		t.Fatalf("/nope = %d %q", code, body)
	}
}

func TestCredentialAttributesAreRedacted(t *testing.T) {
	var out testenv.LogBuffer
	logger, err := telemetry.NewLogger(&out, "info")
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("request", "authorization", "Bearer dfoa_secret", "Device_Code", "dc_secret",
		slog.Group("req", slog.String("cookie", "access_token=secret")), "token_id", "kept-id",
		"redis_url", "redis://:secret@redis:6379/0", "X-CSRF-Token", "secret-csrf")
	line := out.String()
	if strings.Contains(line, "secret") {
		t.Fatalf("credential logged: %s", line)
	}
	if !strings.Contains(line, "kept-id") || strings.Count(line, "[REDACTED]") != 5 {
		t.Fatalf("unexpected redaction: %s", line)
	}
}
