package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/authgate/authgate/internal/pipeline"
)

func envoyRequest(method, path string, headers map[string]string, source string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4711}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "id-1", Method: method, Path: path, Headers: headers,
		}},
	}}
}

// recorder is a Checker that keeps the request it was asked about.
type recorder struct{ got pipeline.Request }

func (r *recorder) Check(_ context.Context, req pipeline.Request) pipeline.Decision {
	r.got = req
	return pipeline.Decision{Allow: true}
}

// seen is the pipeline.Request a server trusting trustedHops proxies builds from in, through the wire codec.
func seen(t *testing.T, in *authv3.CheckRequest, trustedHops int) pipeline.Request {
	t.Helper()
	r := &recorder{}
	NewServer(r, slog.New(slog.DiscardHandler), trustedHops).roundTrip(t, in)
	return r.got
}

func TestDecodeCheckRequest(t *testing.T) {
	in := envoyRequest("GET", "/openapi/v1/apps?workspace_id=x", map[string]string{
		":method": "GET", ":path": "/openapi/v1/apps?workspace_id=x", "Authorization": "Bearer t", "x-authgate-account-id": "a",
	}, "::ffff:198.51.100.7")
	got := seen(t, in, 0)
	if got.Method != "GET" || got.Path != "/openapi/v1/apps?workspace_id=x" || got.RequestID != "id-1" {
		t.Errorf("request %+v", got)
	}
	if got.Headers["authorization"] != "Bearer t" || got.Headers[":path"] == "" || got.Headers["x-authgate-account-id"] != "a" {
		t.Errorf("headers %v", got.Headers)
	}
	if got.ClientIP.String() != "198.51.100.7" {
		t.Errorf("client ip %v", got.ClientIP)
	}

	// Behind one trusted proxy the client is the rightmost X-Forwarded-For entry; without trust the header is ignored.
	xff := envoyRequest("GET", "/", map[string]string{"x-forwarded-for": "6.6.6.6, 203.0.113.5"}, "10.0.0.9")
	if got := seen(t, xff, 1).ClientIP.String(); got != "203.0.113.5" {
		t.Errorf("trusted hop: %s", got)
	}
	if got := seen(t, xff, 0).ClientIP.String(); got != "10.0.0.9" {
		t.Errorf("no trusted hops: %s", got)
	}

	// header_map (encode_raw_headers) with a repeated header, a path only in :path, and no source.
	raw := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/x")},
			{Key: "authorization", RawValue: []byte("Bearer a")}, {Key: "Authorization", RawValue: []byte("Bearer b")},
		}}},
	}}}
	got = seen(t, raw, 0)
	if got.Method != "POST" || got.Path != "/x" || got.Headers["authorization"] != "Bearer a,Bearer b" || got.ClientIP.IsValid() {
		t.Errorf("raw header map: %+v", got)
	}
	if got := seen(t, &authv3.CheckRequest{}, 0); got.Method != "" || got.Path != "" {
		t.Errorf("empty request: %+v", got)
	}

	// A header that is not UTF-8 (obs-text) is decoded, not refused: a refused call is what failure_mode_allow lets through.
	latin1 := envoyRequest("GET", "/openapi/v1/me", map[string]string{"x-note": "cafZ"}, "10.0.0.1")
	b, err := proto.Marshal(latin1)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("cafZ"), []byte("caf\xe9"), 1) // same length, so every length prefix still holds
	if err := proto.Unmarshal(b, &authv3.CheckRequest{}); err == nil {
		t.Fatal("the fixture should be a CheckRequest that proto.Unmarshal refuses")
	}
	if req, err := decodeCheckRequest(b); err != nil || req.req.Headers["x-note"] != "caf\xe9" {
		t.Errorf("latin-1 header: %q, %v", req.req.Headers["x-note"], err)
	}
	for _, bad := range [][]byte{{0x0a}, {0x0a, 0x05, 0x01}, {0x08}, {0x00}, {0x0c}} {
		if _, err := decodeCheckRequest(bad); err == nil {
			t.Errorf("malformed %x decoded without an error", bad)
		}
	}
}

func TestEncodeCheckResponse(t *testing.T) {
	for status, want := range map[int]codes.Code{400: codes.PermissionDenied, 401: codes.Unauthenticated,
		403: codes.PermissionDenied, 404: codes.PermissionDenied, 429: codes.ResourceExhausted, 503: codes.Unavailable} {
		d := pipeline.Decision{Status: status, Code: "some_code", Message: "m",
			DenyHeaders: []pipeline.Header{{Name: "www-authenticate", Value: `Bearer realm="api"`}}}
		if status == 429 {
			d.RetryAfter = 1500 * time.Millisecond
		}
		resp := encode(t, d)
		if codes.Code(resp.GetStatus().GetCode()) != want || int(resp.GetDeniedResponse().GetStatus().GetCode()) != status ||
			resp.GetStatus().GetMessage() != "some_code" {
			t.Errorf("%d: %v", status, resp)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil {
			t.Fatal(err)
		}
		if body["error"] != "some_code" || body["message"] != "m" {
			t.Errorf("%d: body %v", status, body)
		}
		if _, has := body["retry_after_ms"]; has != (status == 429) || (status == 429 && body["retry_after_ms"] != 1500.0) {
			t.Errorf("%d: retry_after_ms in %v", status, body)
		}
		hs := resp.GetDeniedResponse().GetHeaders()
		if len(hs) != 2 || hs[0].GetHeader().GetKey() != "content-type" || hs[0].GetHeader().GetValue() != "application/json" ||
			hs[1].GetHeader().GetKey() != "www-authenticate" {
			t.Errorf("%d: headers %v", status, hs)
		}
	}

	allow := encode(t, pipeline.Decision{Allow: true,
		SetHeaders:      []pipeline.Header{{Name: "x-authgate-token-id", Value: "t"}},
		RemoveHeaders:   []string{"x-authgate-account-id"},
		ResponseHeaders: []pipeline.Header{{Name: "ratelimit-limit", Value: "60"}},
		Metadata:        map[string]string{"token_id": "t", "empty": ""}})
	ok := allow.GetOkResponse()
	if allow.GetStatus() == nil || codes.Code(allow.GetStatus().GetCode()) != codes.OK || ok == nil || len(ok.GetHeaders()) != 1 ||
		ok.GetHeaders()[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD ||
		ok.GetResponseHeadersToAdd()[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD ||
		ok.GetHeadersToRemove()[0] != "x-authgate-account-id" ||
		allow.GetDynamicMetadata().GetFields()["token_id"].GetStringValue() != "t" {
		t.Errorf("allow: %v", allow)
	}
	if _, isString := allow.GetDynamicMetadata().GetFields()["empty"].GetKind().(*structpb.Value_StringValue); !isString {
		t.Errorf("an empty metadata value must still be a string Value: %v", allow.GetDynamicMetadata())
	}
	if bare := encode(t, pipeline.Decision{Allow: true}); bare.GetOkResponse() == nil || bare.GetDynamicMetadata() != nil {
		t.Errorf("bare allow: %v", bare)
	}
}

type panicking struct{}

func (panicking) Check(context.Context, pipeline.Request) pipeline.Decision { panic("bug") }

func TestCheckNeverFails(t *testing.T) {
	s := NewServer(panicking{}, slog.New(slog.DiscardHandler), 0)
	resp := s.roundTrip(t, envoyRequest("GET", "/", nil, "127.0.0.1"))
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unavailable ||
		resp.GetDeniedResponse().GetStatus().GetCode() != 503 || !strings.Contains(resp.GetDeniedResponse().GetBody(), "auth_unavailable") {
		t.Errorf("panic: %v", resp)
	}
}

// FuzzCheckRequestMapping maps arbitrary Envoy input through the real default policy with no dependencies reachable:
// the adapter must never fail, and an allow without a bearer check is only possible on auth: none routes or preflights.
func FuzzCheckRequestMapping(f *testing.F) {
	policy, err := pipeline.LoadPolicy("")
	if err != nil {
		f.Fatal(err)
	}
	pl, err := pipeline.New(policy, pipeline.Options{EnableOAuthBearer: true, CheckTimeout: time.Second},
		pipeline.Deps{Limiter: unreachable{}, Cache: unreachable{}, Tokens: unreachable{}, Directory: unreachable{}})
	if err != nil {
		f.Fatal(err)
	}
	s := NewServer(pl, slog.New(slog.DiscardHandler), 1)
	f.Add("GET", "/openapi/v1/me", "Authorization", "Bearer dfoa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "10.0.0.1")
	f.Add("GET", "/openapi/v1/_health?x=1", "X-Authgate-Account-Id", "a", "::1")
	f.Add("OPTIONS", "/openapi/v1/me", "access-control-request-method", "GET", "not-an-ip")
	f.Add("POST", "/openapi/v1/apps/%2e%2e/run", "authorization", "bearer a,b", "")
	f.Fuzz(func(t *testing.T, method, path, hname, hvalue, source string) {
		// Straight to the server, not through proto.Marshal, which refuses strings that are not UTF-8 (the decoder accepts
		// them; FuzzDecodeMatchesGenerated covers decoding).
		in := envoyRequest(method, path, map[string]string{hname: hvalue, "origin": "https://x"}, source)
		resp := encode(t, s.check(context.Background(), generatedRequest(in)).d)
		if ok := resp.GetOkResponse(); ok != nil {
			for _, h := range ok.GetHeaders() {
				if strings.HasPrefix(h.GetHeader().GetKey(), pipeline.IdentityHeaderPrefix) {
					t.Fatalf("identity header set without any dependency: %v", resp)
				}
			}
			for _, name := range pipeline.IdentityHeaders {
				if !contains(ok.GetHeadersToRemove(), name) {
					t.Fatalf("%s not removed on allow: %v", name, resp)
				}
			}
			return
		}
		d := resp.GetDeniedResponse()
		var body map[string]any
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body["error"] == "" {
			t.Fatalf("deny body %q", d.GetBody())
		}
		if d.GetStatus().GetCode() >= 500 && body["error"] != "auth_unavailable" && body["error"] != "bearer_auth_disabled" {
			t.Fatalf("5xx %v", body)
		}
	})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestRequestIDIsXRequestID: Envoy's attributes.request.http.id is its internal stream id, which no other log records; the
// request id extauthz reports (the pipeline puts it in the decision's metadata, which Envoy's access log prints) is
// x-request-id, the id Envoy, Dify and every other hop log. The attribute is the fallback for a caller without the header.
func TestRequestIDIsXRequestID(t *testing.T) {
	// As Envoy sends it: a decimal stream id as the attribute and the request's UUID in x-request-id.
	const streamID, requestID = "8467196402710386313", "4f8e6cde-33b9-4b0d-8f5e-5dd2a8bde4a1"
	withHeader := envoyRequest("GET", "/openapi/v1/me", map[string]string{"x-request-id": requestID}, "10.0.0.1")
	withHeader.GetAttributes().GetRequest().GetHttp().Id = streamID
	withoutHeader := envoyRequest("GET", "/openapi/v1/me", map[string]string{"user-agent": "curl"}, "10.0.0.1")
	withoutHeader.GetAttributes().GetRequest().GetHttp().Id = streamID
	// header_map (encode_raw_headers): the header arrives as a raw value.
	raw := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Id: streamID, HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":path", RawValue: []byte("/openapi/v1/me")}, {Key: "X-Request-Id", RawValue: []byte(requestID)},
		}}},
	}}}
	for name, tc := range map[string]struct {
		in   *authv3.CheckRequest
		want string
	}{
		"x-request-id":           {withHeader, requestID},
		"x-request-id raw value": {raw, requestID},
		"no x-request-id":        {withoutHeader, streamID},
	} {
		if got := seen(t, tc.in, 0).RequestID; got != tc.want {
			t.Errorf("%s: request id %q, want %q", name, got, tc.want)
		}
	}
}
