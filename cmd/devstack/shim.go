package main

import (
	"log/slog"
	"net/http"
	"net/url"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/authgate/authgate/internal/envoyshim"
)

// shimRoutes are envoy/envoy.yaml's routes: deviceflow's own paths with ExtAuthzPerRoute{disabled: true} (it authenticates
// them itself: device code, console session or grant cookie), its bearer routes through extauthz (rate limit, revocation
// within 1 s), the rest of /openapi/v1 to the upstream (Dify's API), and a JSON 404 for everything else.
func shimRoutes(deviceflow, upstream *url.URL) []envoyshim.Route {
	self := func(r envoyshim.Route) envoyshim.Route { r.Upstream, r.AuthzDisabled = deviceflow, true; return r }
	bearer := func(r envoyshim.Route) envoyshim.Route { r.Upstream = deviceflow; return r }
	return []envoyshim.Route{
		self(envoyshim.Route{Prefix: "/openapi/v1/oauth/device"}),
		self(envoyshim.Route{Path: "/openapi/v1/device/sso-complete"}),
		self(envoyshim.Route{Path: "/openapi/v1/oauth/revoke"}),
		self(envoyshim.Route{Prefix: "/.well-known/oauth-authorization-server"}),
		self(envoyshim.Route{Path: "/openapi/v1/.well-known/oauth-authorization-server"}),
		self(envoyshim.Route{Prefix: "/device"}),
		bearer(envoyshim.Route{Path: "/openapi/v1/me"}),
		bearer(envoyshim.Route{Path: "/openapi/v1/account"}),
		bearer(envoyshim.Route{Prefix: "/openapi/v1/account/sessions"}),
		bearer(envoyshim.Route{Path: "/openapi/v1/oauth/authorizations/self"}),
		{Prefix: "/openapi/v1", Upstream: upstream},
		{Prefix: "/", AuthzDisabled: true, DirectResponse: &envoyshim.DirectResponse{Status: http.StatusNotFound,
			Body:   `{"error":"route_not_found","message":"no such route"}`,
			Header: http.Header{"Content-Type": {"application/json"}}}},
	}
}

// shimConfig mirrors envoy/envoy.yaml's listener: x-authgate-* stripped before ext_authz, header names with underscores
// refused, use_remote_address, normalize_path, merge_slashes and escaped slashes refused, a 200 ms Check timeout with
// status_on_error 503, and its routes.
func shimConfig(authz authv3.AuthorizationClient, deviceflow, upstream *url.URL, logger *slog.Logger) envoyshim.Config {
	return envoyshim.Config{
		Authz:                        authz,
		Timeout:                      200 * time.Millisecond,
		StatusOnError:                503,
		StripRequestHeaderPrefixes:   []string{"x-authgate-"},
		RejectHeadersWithUnderscores: true,
		UseRemoteAddress:             true,
		MergeSlashes:                 true,
		NormalizePath:                true,
		EscapedSlashes:               envoyshim.RejectEscapedSlashes,
		Routes:                       shimRoutes(deviceflow, upstream),
		Logger:                       logger,
	}
}
