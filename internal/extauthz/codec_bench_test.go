package extauthz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"google.golang.org/protobuf/proto"

	"github.com/authgate/authgate/internal/pipeline"
)

// A warm allow as the benchmark's mix produces it: identity headers, the limiter's response headers, access-log metadata.
func benchDecision() pipeline.Decision {
	h := []pipeline.Header{
		{Name: "x-authgate-account-id", Value: "7d3c1e0a-1111-4222-8333-944455556666"},
		{Name: "x-authgate-tenant-id", Value: "7d3c1e0a-1111-4222-8333-944455556667"},
		{Name: "x-authgate-app-id", Value: "7d3c1e0a-1111-4222-8333-944455556668"},
		{Name: "x-authgate-token-kind", Value: "dfoa"},
		{Name: "x-authgate-scopes", Value: "full"},
		{Name: "x-authgate-token-id", Value: "7d3c1e0a-1111-4222-8333-944455556669"},
	}
	md := map[string]string{"route": "app_run", "request_id": "5f0c2a9e-8c1b-4a44-9b1e-1d2f3a4b5c6d"}
	for _, x := range h {
		md[x.Name[len(pipeline.IdentityHeaderPrefix):]] = x.Value
	}
	return pipeline.Decision{Allow: true, SetHeaders: h, RemoveHeaders: []string{"x-authgate-end-user-id"},
		ResponseHeaders: []pipeline.Header{{Name: "ratelimit-limit", Value: "60"}, {Name: "ratelimit-remaining", Value: "59"},
			{Name: "ratelimit-reset", Value: "60"}},
		Metadata: md}
}

// go test -run '^$' -bench Codec -benchmem ./internal/extauthz compares the wire mapping with the generated types.
func BenchmarkCodecEncode(b *testing.B) {
	d := benchDecision()
	b.ReportAllocs()
	for b.Loop() {
		_ = appendCheckResponse(make([]byte, 0, 1024), d)
	}
}

func BenchmarkCodecEncodeGenerated(b *testing.B) {
	d := benchDecision()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proto.Marshal(generatedResponse(d)); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRequest(b *testing.B) []byte {
	in := envoyRequest("POST", "/openapi/v1/apps/7d3c1e0a-1111-4222-8333-944455556668/run", map[string]string{
		":authority": "api.example.com", ":method": "POST", ":path": "/openapi/v1/apps/7d3c1e0a-1111-4222-8333-944455556668/run",
		":scheme": "https", "authorization": "Bearer dfoa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"content-type": "application/json", "user-agent": "difyctl/1.0", "x-forwarded-for": "203.0.113.5",
		"x-forwarded-proto": "https", "x-request-id": "5f0c2a9e-8c1b-4a44-9b1e-1d2f3a4b5c6d", "accept": "*/*",
	}, "10.0.0.7")
	raw, err := proto.Marshal(in)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

func BenchmarkCodecDecode(b *testing.B) {
	raw := benchRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeCheckRequest(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecDecodeGenerated(b *testing.B) {
	raw := benchRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		var in authv3.CheckRequest
		if err := proto.Unmarshal(raw, &in); err != nil {
			b.Fatal(err)
		}
		_ = generatedRequest(&in)
	}
}
