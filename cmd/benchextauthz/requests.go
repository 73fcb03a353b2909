package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/authgate/authgate/internal/tokens"
)

const apiPrefix = "/openapi/v1"

// request is one CheckRequest, encoded once, up front: the load generator only copies bytes onto the wire, so its own cost
// per request stays small next to the servers' and does not hide the difference being measured.
type request struct {
	route string // the route pattern, for reports
	raw   []byte
	// What a correct allow carries for it: the identity of a verified tenant and of a resolved app.
	wantTenant, wantApp bool
	expect              expectation
	// secretAt > 0 is the offset of the 43 characters after the bearer's prefix: they are replaced with random ones on
	// every send, so no cache or negative entry ever knows the bearer (W3).
	secretAt int
}

// expectation is what a correct answer to a request is.
type expectation uint8

const (
	expectAllow      expectation = iota
	expectAllowOr429             // a token far over its limit (W2): mostly 429 rate_limited
	expectRefused                // a random bearer (W3): 401 invalid_bearer, or 429 when its address's lookups are spent
)

// rpc codes of the denies a workload expects: 429 is RESOURCE_EXHAUSTED, 401 UNAUTHENTICATED.
const (
	codeResourceExhausted = 8
	codeUnauthenticated   = 16
)

// accepts reports whether a deny with this rpc code is a correct answer.
func (e expectation) accepts(code int64) bool {
	switch e {
	case expectAllowOr429:
		return code == codeResourceExhausted
	case expectRefused:
		return code == codeResourceExhausted || code == codeUnauthenticated
	}
	return false
}

// routeUse is one entry of the route mix, with its weight (requests per token in the mix).
type routeUse struct {
	method, pattern string
	weight          int
	path            func(t accountToken, app string) string
	wantTenant      bool
	wantApp         bool
	accountOnly     bool
}

// accountMix is what a difyctl user's traffic looks like: mostly running apps, some reads. External (dfoe_) subjects may
// only call the identity routes on a CE deployment (app_access denies them every app without the enterprise service).
var accountMix = []routeUse{
	{method: "POST", pattern: "/apps/{app_id}/run", weight: 3, wantTenant: true, wantApp: true,
		path: func(_ accountToken, app string) string { return "/apps/" + app + "/run" }},
	{method: "POST", pattern: "/apps/{app_id}/chat-messages", weight: 3, wantTenant: true, wantApp: true,
		path: func(_ accountToken, app string) string { return "/apps/" + app + "/chat-messages" }},
	{method: "GET", pattern: "/apps/{app_id}/info", weight: 1, wantTenant: true, wantApp: true,
		path: func(_ accountToken, app string) string { return "/apps/" + app + "/info" }},
	{method: "GET", pattern: "/apps?workspace_id=", weight: 1, wantTenant: true,
		path: func(t accountToken, _ string) string { return "/apps?workspace_id=" + t.tenantID + "&page=1&limit=20" }},
	{method: "GET", pattern: "/workspaces/{workspace_id}", weight: 1, wantTenant: true,
		path: func(t accountToken, _ string) string { return "/workspaces/" + t.tenantID }},
	{method: "GET", pattern: "/me", weight: 1,
		path: func(accountToken, string) string { return "/me" }},
}

var externalMix = []routeUse{
	{method: "GET", pattern: "/me", weight: 1},
	{method: "GET", pattern: "/account", weight: 1},
}

// mixRequests builds today's mix for every token of set, shuffled with a fixed seed so runs are comparable.
func mixRequests(set tokenSet, expect expectation) ([]request, error) {
	rng := rand.New(rand.NewPCG(3, 7))
	var out []request
	for i, t := range set.accounts {
		for _, r := range accountMix {
			for range r.weight {
				req, err := accountRequest(rng, t, r, clientAddr(i))
				if err != nil {
					return nil, err
				}
				req.expect = expect
				out = append(out, req)
			}
		}
	}
	for i, tok := range set.external {
		for _, r := range externalMix {
			req, err := newRequest(rng, tok, r.method, r.pattern, r.pattern, clientAddr(len(set.accounts)+i), false, false)
			if err != nil {
				return nil, err
			}
			req.expect = expect
			out = append(out, req)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out, nil
}

// oneEachRequests sends each token of set once per pass, on a route of the mix chosen by its weights (W1, W4).
func oneEachRequests(set tokenSet) ([]request, error) {
	rng := rand.New(rand.NewPCG(5, 11))
	var weighted []routeUse
	for _, r := range accountMix {
		for range r.weight {
			weighted = append(weighted, r)
		}
	}
	var out []request
	for i, t := range set.accounts {
		req, err := accountRequest(rng, t, weighted[i%len(weighted)], clientAddr(i))
		if err != nil {
			return nil, err
		}
		out = append(out, req)
	}
	for i, tok := range set.external {
		r := externalMix[i%len(externalMix)]
		req, err := newRequest(rng, tok, r.method, r.pattern, r.pattern, clientAddr(len(set.accounts)+i), false, false)
		if err != nil {
			return nil, err
		}
		out = append(out, req)
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out, nil
}

// randomBearerRequests are n requests with well-formed bearers no one minted, from addresses many addresses (W3). The
// secret is replaced on every send.
func randomBearerRequests(n, addresses int) ([]request, error) {
	rng := rand.New(rand.NewPCG(13, 17))
	placeholder := tokens.Account.Prefix + strings.Repeat("A", 43)
	var out []request
	for i := range n {
		addr := netip.AddrFrom4([4]byte{198, 18, byte(i % addresses / 256), byte(i % addresses % 256)})
		r := accountMix[i%2*5] // POST /apps/{id}/run or GET /me
		path := "/me"
		if r.wantApp {
			path = "/apps/" + fixtureID(0xa0, 0) + "/run"
		}
		req, err := newRequest(rng, placeholder, r.method, r.pattern, path, addr, false, false)
		if err != nil {
			return nil, err
		}
		at := bytes.Index(req.raw, []byte(placeholder))
		if at < 0 || bytes.Count(req.raw, []byte(placeholder)) != 1 {
			return nil, fmt.Errorf("random bearer: placeholder not found once in the encoded request")
		}
		req.secretAt, req.expect = at+len(tokens.Account.Prefix), expectRefused
		out = append(out, req)
	}
	return out, nil
}

func accountRequest(rng *rand.Rand, t accountToken, r routeUse, client netip.Addr) (request, error) {
	app := t.appIDs[rng.IntN(len(t.appIDs))]
	return newRequest(rng, t.plain, r.method, r.pattern, r.path(t, app), client, r.wantTenant, r.wantApp)
}

func newRequest(rng *rand.Rand, tok, method, pattern, path string, client netip.Addr, wantTenant, wantApp bool) (request, error) {
	raw, err := proto.Marshal(checkRequest(rng, method, apiPrefix+path, tok, client))
	if err != nil {
		return request{}, err
	}
	return request{route: method + " " + pattern, raw: raw, wantTenant: wantTenant, wantApp: wantApp}, nil
}

func clientAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{203, 0, byte(113 + i/250%16), byte(1 + i%250)})
}

// checkRequest is what Envoy's ext_authz filter sends: attributes.request.http with the query in the path, lowercased
// headers including the pseudo-headers, the downstream peer and the listener's address.
func checkRequest(rng *rand.Rand, method, path, token string, client netip.Addr) *authv3.CheckRequest {
	id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff,
		rng.Uint32()&0xfff, rng.Uint64()&0xffffffffffff)
	headers := map[string]string{
		":authority":               "dify.example.com",
		":method":                  method,
		":path":                    path,
		":scheme":                  "https",
		"authorization":            "Bearer " + token,
		"accept":                   "application/json",
		"user-agent":               "difyctl/0.4.0 (linux; amd64)",
		"x-forwarded-for":          client.String(),
		"x-forwarded-proto":        "https",
		"x-request-id":             id,
		"x-envoy-external-address": client.String(),
	}
	var size int64
	if method == "POST" {
		headers["content-type"] = "application/json"
		headers["content-length"] = "96"
		headers["accept"] = "text/event-stream"
		size = 96
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(client.String(), 40000+uint32(rng.IntN(20000)))},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress("10.0.0.2", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: id, Method: method, Path: path, Host: "dify.example.com", Scheme: "https", Protocol: "HTTP/1.1",
				Size: size, Headers: headers,
			},
		},
	}}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
