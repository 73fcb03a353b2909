package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/authgate/authgate/internal/tokens"
)

// The sanity check rests on the scan telling allows from denies exactly as a full decode would.
func TestScanTellsAllowsFromDenies(t *testing.T) {
	meta, _ := structpb.NewStruct(map[string]any{"route": "app_run"})
	cases := []struct {
		name  string
		resp  *authv3.CheckResponse
		allow bool
	}{
		{"allow with headers and metadata", &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:         []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-authgate-token-id", Value: "t"}}},
				HeadersToRemove: []string{"x-authgate-app-id"},
			}},
			DynamicMetadata: meta,
		}, true},
		{"null server's allow", nullAllow, true},
		{"deny", &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.Unavailable), Message: "auth_unavailable"},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: 503}, Body: `{"error":"auth_unavailable","message":"m"}`,
			}},
		}, false},
		{"OK status without ok_response", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}, false},
		{"ok_response with a non-OK status", &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := proto.Marshal(c.resp)
			if err != nil {
				t.Fatal(err)
			}
			var r checkResult
			if err := (rawCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &r); err != nil {
				t.Fatal(err)
			}
			if r.allowed != c.allow {
				t.Fatalf("allowed = %v, want %v", r.allowed, c.allow)
			}
			if !c.allow && len(r.raw) == 0 {
				t.Fatal("a deny's bytes were not kept for the report")
			}
		})
	}
}

func TestScanRejectsGarbage(t *testing.T) {
	var r checkResult
	if err := r.scan([]byte{0x0a, 0xff}); err == nil {
		t.Fatal("truncated message scanned without an error")
	}
}

func TestDescribeDenyShowsStatusAndBody(t *testing.T) {
	raw, _ := proto.Marshal(&authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: 401}, Body: `{"error":"invalid_bearer"}`,
		}},
	})
	got := describeDeny(raw)
	for _, want := range []string{"rpc 16", "HTTP 401", "invalid_bearer"} {
		if !strings.Contains(got, want) {
			t.Fatalf("%q lacks %q", got, want)
		}
	}
}

func TestRequestsRoundTripThroughTheCodec(t *testing.T) {
	f := newFixture(4)
	var apps []string
	for _, a := range f.Apps {
		if a.TenantID == f.Tenants[0].ID {
			apps = append(apps, a.ID)
		}
	}
	set := tokenSet{accounts: []accountToken{{plain: "dfoa_" + strings.Repeat("a", 43), tenantID: f.Tenants[0].ID, appIDs: apps}},
		external: []string{"dfoe_" + strings.Repeat("b", 43)}}
	mix, err := mixRequests(set, expectAllow)
	if err != nil {
		t.Fatal(err)
	}
	if want := 10 + 2; len(mix) != want {
		t.Fatalf("%d requests, want %d (the account mix plus the external mix)", len(mix), want)
	}
	each, err := oneEachRequests(set)
	if err != nil {
		t.Fatal(err)
	}
	random, err := randomBearerRequests(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range slices.Concat(mix, each, random) {
		out, err := (rawCodec{}).Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		var in authv3.CheckRequest
		if err := proto.Unmarshal(out.Materialize(), &in); err != nil {
			t.Fatal(err)
		}
		h := in.GetAttributes().GetRequest().GetHttp()
		if h.GetHeaders()[":path"] != h.GetPath() || !strings.HasPrefix(h.GetPath(), apiPrefix+"/") ||
			!strings.HasPrefix(h.GetHeaders()["authorization"], "Bearer dfo") || h.GetHeaders()[":method"] != h.GetMethod() {
			t.Fatalf("%s: not Envoy-shaped: %v", r.route, h)
		}
	}
}

// A random bearer is rewritten in place on every send and stays a well-formed token.
func TestRandomBearersAreWellFormedAndFresh(t *testing.T) {
	reqs, err := randomBearerRequests(2, 2)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for range 100 {
		raw := append([]byte(nil), reqs[0].raw...)
		randomSecret(rng, raw[reqs[0].secretAt:reqs[0].secretAt+43])
		var in authv3.CheckRequest
		if err := proto.Unmarshal(raw, &in); err != nil {
			t.Fatal(err)
		}
		bearer := strings.TrimPrefix(in.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"], "Bearer ")
		if _, err := tokens.Parse(bearer); err != nil {
			t.Fatalf("%q: %v", bearer, err)
		}
		if seen[bearer] {
			t.Fatalf("%q sent twice", bearer)
		}
		seen[bearer] = true
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	s := make([]int64, 100)
	for i := range s {
		s[i] = int64(i + 1)
	}
	if p := percentile(s, 0.50); p != 50 {
		t.Errorf("p50 = %d, want 50", p)
	}
	if p := percentile(s, 0.99); p != 99 {
		t.Errorf("p99 = %d, want 99", p)
	}
	if p := percentile(nil, 0.99); p != 0 {
		t.Errorf("p99 of nothing = %d", p)
	}
}
