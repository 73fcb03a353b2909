// Package extauthz is the Envoy ext_authz v3 gRPC adapter: it maps a CheckRequest to a pipeline.Request and the pipeline's
// Decision to a CheckResponse. A Check that reaches the pipeline never ends in a gRPC error, so the server fails closed
// whatever Envoy's failure_mode_allow says.
package extauthz

import (
	"context"
	"log/slog"
	"runtime/debug"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/authgate/authgate/internal/assertion"
	"github.com/authgate/authgate/internal/clientip"
	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/pipeline"
)

// Checker decides requests; *pipeline.Pipeline is one.
type Checker interface {
	Check(ctx context.Context, req pipeline.Request) pipeline.Decision
}

// Server is envoy.service.auth.v3.Authorization; Register serves it.
type Server struct {
	checker     Checker
	logger      *slog.Logger
	trustedHops int
	tracer      trace.Tracer
	// lastUsed notes the token of each allowed Check for last_used_at; nil records nothing.
	lastUsed *lastused.Recorder
	// assertion signs each allow's identity for the upstream (IDENTITY_ASSERTION); nil adds none.
	assertion *assertion.Signer
}

// NewServer returns the gRPC service over checker. trustedHops (TRUSTED_PROXY_HOPS) is how many X-Forwarded-For entries,
// counted from the right, were appended by proxies we trust; 0 takes the client address from Envoy's source address.
func NewServer(checker Checker, logger *slog.Logger, trustedHops int) *Server {
	return &Server{checker: checker, logger: logger, trustedHops: trustedHops, tracer: otel.Tracer(tracerName)}
}

// check answers every request; even a bug in a step is a 503 deny rather than an error or a crash.
func (s *Server) check(ctx context.Context, in checkRequest) (resp *checkResponse) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.ErrorContext(ctx, "check panicked; denying 503", "panic", r, "stack", string(debug.Stack()))
			resp = &checkResponse{pipeline.Decision{Status: 503, Code: pipeline.CodeAuthUnavailable,
				Message: "authentication is temporarily unavailable; retry shortly"}}
		}
	}()
	req := in.req
	req.ClientIP = clientip.FromForwarded(in.peer, req.Headers["x-forwarded-for"], s.trustedHops)
	ctx, span := s.startCheckSpan(ctx, req)
	defer span.End()
	d := s.checker.Check(ctx, req)
	if d.Allow && s.assertion != nil {
		d = s.addAssertion(d)
	}
	endCheckSpan(span, d)
	if d.Allow && s.lastUsed != nil {
		s.recordUse(d.SetHeaders)
	}
	return &checkResponse{d}
}

// recordUse notes the use of the token an allow identified (none on auth: none routes). The recorder only takes a lock and
// a non-blocking send, so the Check never waits on Postgres for it.
func (s *Server) recordUse(headers []pipeline.Header) {
	for _, h := range headers {
		if h.Name == pipeline.HeaderTokenID {
			s.lastUsed.Record(h.Value)
			return
		}
	}
}
