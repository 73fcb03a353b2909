package extauthz

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/authgate/authgate/internal/pipeline"
)

// roundTrip takes in through the server's codec and handler as a gRPC call would, without a network.
func (s *Server) roundTrip(t testing.TB, in *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	req, err := decodeCheckRequest(b)
	if err != nil {
		t.Fatalf("decoding %v: %v", in, err)
	}
	return encode(t, s.check(context.Background(), req).d)
}

// encode is appendCheckResponse read back through the generated types, as Envoy reads it.
func encode(t testing.TB, d pipeline.Decision) *authv3.CheckResponse {
	t.Helper()
	var resp authv3.CheckResponse
	if err := proto.Unmarshal(appendCheckResponse(nil, d), &resp); err != nil {
		t.Fatalf("encoded %+v is not a CheckResponse: %v", d, err)
	}
	return &resp
}

// generatedRequest is the reference for decodeCheckRequest: the same mapping through proto.Unmarshal's generated types.
func generatedRequest(in *authv3.CheckRequest) checkRequest {
	h := in.GetAttributes().GetRequest().GetHttp()
	headers := h.GetHeaders()
	if len(h.GetHeaderMap().GetHeaders()) > 0 || !namesLowerCase(headers) {
		headers = make(map[string]string)
		for k, v := range h.GetHeaders() {
			addHeader(headers, k, v)
		}
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
	id := headers["x-request-id"]
	if id == "" {
		id = h.GetId()
	}
	return checkRequest{
		req:  pipeline.Request{Method: method, Path: path, Headers: headers, RequestID: id},
		peer: in.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress(),
	}
}

// generatedResponse is the reference for appendCheckResponse, built from the generated types.
func generatedResponse(d pipeline.Decision) *authv3.CheckResponse {
	options := func(hs []pipeline.Header) []*corev3.HeaderValueOption {
		var out []*corev3.HeaderValueOption
		for _, h := range hs {
			out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
		}
		return out
	}
	resp := &authv3.CheckResponse{}
	if len(d.Metadata) > 0 {
		resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range d.Metadata {
			resp.DynamicMetadata.Fields[k] = structpb.NewStringValue(v)
		}
	}
	if d.Allow {
		resp.Status = &rpcstatus.Status{Code: int32(codes.OK)}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: options(d.SetHeaders), HeadersToRemove: d.RemoveHeaders, ResponseHeadersToAdd: options(d.ResponseHeaders),
		}}
		return resp
	}
	headers := append([]pipeline.Header{{Name: "content-type", Value: "application/json"}}, d.DenyHeaders...)
	resp.Status = &rpcstatus.Status{Code: int32(rpcCode(d.Status)), Message: string(d.Code)}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)}, Headers: options(headers), Body: denyBody(d),
	}}
	return resp
}

// FuzzDecodeMatchesGenerated feeds arbitrary bytes to decodeCheckRequest: whatever proto.Unmarshal accepts must decode to
// what the generated types say, and nothing may panic.
func FuzzDecodeMatchesGenerated(f *testing.F) {
	for _, in := range []*authv3.CheckRequest{
		envoyRequest("GET", "/openapi/v1/apps?workspace_id=x", map[string]string{":path": "/x", "authorization": "Bearer t"}, "::1"),
		envoyRequest("", "", map[string]string{":method": "POST", ":path": "/p", "x-request-id": "r", "X-Up": "1"}, "10.0.0.1"),
		{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Query: "a=1", Path: "/q", HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: "A", Value: "1"}, {Key: "a", RawValue: []byte("2")}}}}}}},
		{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{
			Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/sock"}}}}}},
	} {
		b, err := proto.Marshal(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, b...)) // a message twice: its fields merge
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeCheckRequest(b)
		var in authv3.CheckRequest
		if proto.Unmarshal(b, &in) != nil {
			return // protobuf refuses it (malformed, or a string that is not UTF-8): decoding may go either way
		}
		if err != nil {
			t.Fatalf("proto.Unmarshal accepts %x, decodeCheckRequest does not: %v", b, err)
		}
		if ambiguousJoin(in.GetAttributes().GetRequest().GetHttp().GetHeaders()) {
			return // two names differing only in case: the generated map's order, and so the joined value, is random
		}
		want := generatedRequest(&in)
		if got.peer != want.peer || got.req.Method != want.req.Method || got.req.Path != want.req.Path ||
			got.req.RequestID != want.req.RequestID || !maps.Equal(got.req.Headers, want.req.Headers) {
			t.Fatalf("decoded %+v, the generated types give %+v", got, want)
		}
	})
}

func ambiguousJoin(headers map[string]string) bool {
	seen := map[string]bool{}
	for k := range headers {
		lk := strings.ToLower(k)
		if seen[lk] {
			return true
		}
		seen[lk] = true
	}
	return false
}

// FuzzEncodeMatchesGenerated: every decision, allow or deny, encodes to the CheckResponse the generated types build, its
// strings made valid UTF-8.
func FuzzEncodeMatchesGenerated(f *testing.F) {
	f.Add(true, 200, "", "x-authgate-token-id", "t", "authorization", "token_id", "", int64(0))
	f.Add(false, 401, "invalid_bearer", "www-authenticate", `Bearer error="invalid_token"`, "", "route", "me", int64(0))
	f.Add(false, 429, "rate_limited", "retry-after", "2", "", "", "", int64(1500))
	f.Add(false, 400, "invalid_path", "x-\xff", "caf\xe9", "x-authgate-\xce", "request_id", "\xc3\x28", int64(0))
	f.Fuzz(func(t *testing.T, allow bool, status int, code, hname, hvalue, remove, mkey, mvalue string, retryMS int64) {
		status = int(int32(status)) // HttpStatus.code is an int32 enum
		h := []pipeline.Header{{Name: hname, Value: hvalue}, {Name: "ratelimit-limit", Value: "60"}}
		d := pipeline.Decision{Allow: allow, Status: status, Code: pipeline.Code(code), Message: hvalue,
			RetryAfter: time.Duration(retryMS) * time.Millisecond, Metadata: map[string]string{mkey: mvalue, "route": code}}
		if allow {
			d.SetHeaders, d.RemoveHeaders, d.ResponseHeaders = h, []string{remove, "x-authgate-tenant-id"}, h[1:]
		} else {
			d.DenyHeaders = h
		}
		// encode fails the test if proto.Unmarshal refuses the bytes, as it does any string that is not UTF-8.
		if got, want := encode(t, d), generatedResponse(validUTF8(d)); !proto.Equal(got, want) {
			t.Fatalf("encoded\n%v\nthe generated types give\n%v", got, want)
		}
	})
}

// TestServedOverGRPC: Check through a real gRPC connection with the generated client, as Envoy calls it, and the health
// service, which goes through the proto codec the server falls back to.
func TestServedOverGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPCServer()
	NewServer(fixedChecker{Allow: true, SetHeaders: []pipeline.Header{{Name: "x-authgate-token-id", Value: "t"}},
		Metadata: map[string]string{"token_id": "t"}}, slog.New(slog.DiscardHandler), 0).Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, envoyRequest("GET", "/openapi/v1/me", nil, "10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if h := resp.GetOkResponse().GetHeaders(); len(h) != 1 || h[0].GetHeader().GetValue() != "t" ||
		resp.GetDynamicMetadata().GetFields()["token_id"].GetStringValue() != "t" {
		t.Errorf("check over gRPC: %v", resp)
	}
	if st, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil ||
		st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health over gRPC: %v, %v", st, err)
	}
}

func TestEncodedStringsAreValidUTF8(t *testing.T) {
	resp := encode(t, pipeline.Decision{Allow: true, RemoveHeaders: []string{"x-authgate-\xff"},
		Metadata: map[string]string{"request_id": "r\xce"}})
	if got := resp.GetOkResponse().GetHeadersToRemove(); len(got) != 1 || got[0] != "x-authgate-\uFFFD" {
		t.Errorf("headers_to_remove %q", got)
	}
	if got := resp.GetDynamicMetadata().GetFields()["request_id"].GetStringValue(); got != "r\uFFFD" {
		t.Errorf("request_id %q", got)
	}
	if d := benchDecision(); testing.AllocsPerRun(100, func() { _ = validUTF8(d) }) != 0 {
		t.Error("validUTF8 allocates for a decision that is valid already")
	}
}
