// Package extauthz is the Envoy ext_authz v3 gRPC adapter: it maps a CheckRequest to a pipeline.Request and the pipeline's
// Decision to a CheckResponse. Check never returns a gRPC error, so the server fails closed whatever Envoy's
// failure_mode_allow says.
package extauthz

import (
	"context"
	"encoding/json"
	"log/slog"
	"runtime/debug"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/authgate/authgate/internal/clientip"
	"github.com/authgate/authgate/internal/pipeline"
)

// Checker decides requests; *pipeline.Pipeline is one.
type Checker interface {
	Check(ctx context.Context, req pipeline.Request) pipeline.Decision
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	checker     Checker
	logger      *slog.Logger
	trustedHops int
	tracer      trace.Tracer
}

// NewServer returns the gRPC service over checker. trustedHops (TRUSTED_PROXY_HOPS) is how many X-Forwarded-For entries,
// counted from the right, were appended by proxies we trust; 0 takes the client address from Envoy's source address.
func NewServer(checker Checker, logger *slog.Logger, trustedHops int) *Server {
	return &Server{checker: checker, logger: logger, trustedHops: trustedHops, tracer: otel.Tracer(tracerName)}
}

// Check answers every request with a CheckResponse; even a bug in a step is a 503 deny rather than an error or a crash.
func (s *Server) Check(ctx context.Context, in *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.ErrorContext(ctx, "check panicked; denying 503", "panic", r, "stack", string(debug.Stack()))
			resp = ToCheckResponse(pipeline.Decision{Status: 503, Code: pipeline.CodeAuthUnavailable,
				Message: "authentication is temporarily unavailable; retry shortly"})
		}
	}()
	req := ToRequest(in, s.trustedHops)
	ctx, span := s.startCheckSpan(ctx, req)
	defer span.End()
	d := s.checker.Check(ctx, req)
	endCheckSpan(span, d)
	return ToCheckResponse(d), nil
}

// ToRequest maps Envoy's attributes.request.http and source address onto a pipeline.Request.
func ToRequest(in *authv3.CheckRequest, trustedHops int) pipeline.Request {
	attrs := in.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	// Envoy sends lower-cased names, already joined: the usual map is used as it is (the pipeline only reads it), which
	// spares a warm Check a copy.
	headers := h.GetHeaders()
	if len(h.GetHeaderMap().GetHeaders()) > 0 || !namesLowerCase(headers) {
		headers = make(map[string]string, len(h.GetHeaders()))
		for k, v := range h.GetHeaders() {
			addHeader(headers, k, v)
		}
		// Envoy sends header_map instead of headers when encode_raw_headers is set.
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			addHeader(headers, hv.GetKey(), v)
		}
	}
	path := h.GetPath()
	if path == "" {
		path = headers[":path"]
	}
	if q := h.GetQuery(); q != "" && !strings.Contains(path, "?") {
		path += "?" + q
	}
	method := h.GetMethod()
	if method == "" {
		method = headers[":method"]
	}
	id := h.GetId()
	if id == "" {
		id = headers["x-request-id"]
	}
	peer := attrs.GetSource().GetAddress().GetSocketAddress().GetAddress()
	return pipeline.Request{
		Method:    method,
		Path:      path,
		Headers:   headers,
		ClientIP:  clientip.FromForwarded(peer, headers["x-forwarded-for"], trustedHops),
		RequestID: id,
	}
}

func namesLowerCase(headers map[string]string) bool {
	for name := range headers {
		for i := 0; i < len(name); i++ {
			if 'A' <= name[i] && name[i] <= 'Z' {
				return false
			}
		}
	}
	return true
}

// addHeader lower-cases the name and joins repeats with commas, as Envoy does.
func addHeader(headers map[string]string, name, value string) {
	name = strings.ToLower(name)
	if prev, ok := headers[name]; ok {
		headers[name] = prev + "," + value
		return
	}
	headers[name] = value
}

// rpcCode is SPEC §3.3's mapping from HTTP status to the CheckResponse status.
func rpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case 401:
		return codes.Unauthenticated
	case 429:
		return codes.ResourceExhausted
	case 503:
		return codes.Unavailable
	default:
		return codes.PermissionDenied
	}
}

type errorBody struct {
	Error        pipeline.Code `json:"error"`
	Message      string        `json:"message"`
	RetryAfterMS *int64        `json:"retry_after_ms,omitempty"`
}

// ToCheckResponse maps a Decision onto Envoy's CheckResponse.
func ToCheckResponse(d pipeline.Decision) *authv3.CheckResponse {
	resp := &authv3.CheckResponse{DynamicMetadata: metadata(d.Metadata)}
	if d.Allow {
		resp.Status = &rpcstatus.Status{Code: int32(codes.OK)}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:              headerOptions(d.SetHeaders),
			HeadersToRemove:      d.RemoveHeaders,
			ResponseHeadersToAdd: headerOptions(d.ResponseHeaders),
		}}
		return resp
	}
	body := errorBody{Error: d.Code, Message: d.Message}
	if d.Status == 429 {
		ms := d.RetryAfter.Milliseconds()
		body.RetryAfterMS = &ms
	}
	raw, _ := json.Marshal(body) // strings and an int: cannot fail
	headers := append([]pipeline.Header{{Name: "content-type", Value: "application/json"}}, d.DenyHeaders...)
	resp.Status = &rpcstatus.Status{Code: int32(rpcCode(d.Status)), Message: string(d.Code)}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Headers: headerOptions(headers),
		Body:    string(raw),
	}}
	return resp
}

// headerOptions sets every header with OVERWRITE_IF_EXISTS_OR_ADD: Envoy's default appends a duplicate. The messages are
// allocated in blocks, one per kind rather than one per header: a warm Check is cheap enough that this shows.
func headerOptions(hs []pipeline.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	opts := make([]corev3.HeaderValueOption, len(hs))
	values := make([]corev3.HeaderValue, len(hs))
	for i, h := range hs {
		values[i].Key, values[i].Value = h.Name, h.Value
		opts[i].Header = &values[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}

// metadata allocates its values in blocks, as headerOptions does.
func metadata(m map[string]string) *structpb.Struct {
	if len(m) == 0 {
		return nil
	}
	fields := make(map[string]*structpb.Value, len(m))
	values := make([]structpb.Value, len(m))
	strs := make([]structpb.Value_StringValue, len(m))
	i := 0
	for k, v := range m {
		strs[i].StringValue = v
		values[i].Kind = &strs[i]
		fields[k] = &values[i]
		i++
	}
	return &structpb.Struct{Fields: fields}
}
