package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const apiPrefix = "/openapi/v1"

// request is one CheckRequest, encoded once, up front: the load generator only copies bytes onto the wire, so its own cost
// per request stays small next to the servers' and does not hide the difference being measured.
type request struct {
	route string // the route pattern, for reports
	raw   []byte
	// What a correct allow carries for it: the identity of a verified tenant and of a resolved app.
	wantTenant, wantApp bool
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

// buildRequests builds the whole mix for every token, shuffled with a fixed seed so runs are comparable.
func buildRequests(w *world) ([]request, error) {
	rng := rand.New(rand.NewPCG(3, 7))
	var out []request
	add := func(tok, method, pattern, path string, client netip.Addr, wantTenant, wantApp bool) error {
		raw, err := proto.Marshal(checkRequest(rng, method, apiPrefix+path, tok, client))
		if err != nil {
			return err
		}
		out = append(out, request{route: method + " " + pattern, raw: raw, wantTenant: wantTenant, wantApp: wantApp})
		return nil
	}
	for i, t := range w.accounts {
		client := clientAddr(i)
		for _, r := range accountMix {
			for range r.weight {
				app := t.appIDs[rng.IntN(len(t.appIDs))]
				if err := add(t.plain, r.method, r.pattern, r.path(t, app), client, r.wantTenant, r.wantApp); err != nil {
					return nil, err
				}
			}
		}
	}
	for i, tok := range w.external {
		client := clientAddr(len(w.accounts) + i)
		for _, r := range externalMix {
			if err := add(tok, r.method, r.pattern, r.pattern, client, false, false); err != nil {
				return nil, err
			}
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out, nil
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
