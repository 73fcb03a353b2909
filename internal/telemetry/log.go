package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger returns a JSON logger at level (debug, info, warn, error; "" is info) whose lines carry trace_id and
// span_id when the ctx passed to the *Context methods holds a span.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if level == "" {
		level = "info"
	}
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	return slog.New(traceHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: redact})}), nil
}

// secretKeys are attribute names whose values are credentials. Callers must not log credentials at all; this is the
// net under that rule, for an attribute added in a hurry.
var secretKeys = map[string]bool{
	"authorization": true, "cookie": true, "set-cookie": true, "token": true, "access_token": true,
	"refresh_token": true, "device_code": true, "assertion": true, "sso_assertion": true, "signed_state": true,
	"secret": true, "secret_key": true, "password": true, "csrf_token": true, "x-csrf-token": true,
	"device_approval_grant": true, "enterprise_api_secret_key": true,
	// Connection URLs may carry a password.
	"database_url": true, "redis_url": true,
}

func redact(_ []string, a slog.Attr) slog.Attr {
	if secretKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, "[REDACTED]")
	}
	return a
}

// traceHandler adds the span context of the record's ctx, so a log line can be found from a trace and back.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
