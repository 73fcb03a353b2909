package main

import (
	"log/slog"
	"net/url"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/authgate/authgate/internal/envoyshim"
)

// deviceflowSelfAuthenticated are the paths envoy/envoy.yaml routes to deviceflow with ExtAuthzPerRoute{disabled: true}:
// deviceflow authenticates them itself (device code, console session or grant cookie).
var deviceflowSelfAuthenticated = []string{
	"/openapi/v1/oauth/device",
	"/openapi/v1/oauth/revoke",
	"/.well-known/oauth-authorization-server",
	"/openapi/v1/.well-known/oauth-authorization-server",
	"/device",
}

// deviceflowBearerRoutes go to deviceflow too, but through extauthz (rate limit, revocation within 1 s).
var deviceflowBearerRoutes = []string{
	"/openapi/v1/me",
	"/openapi/v1/account",
	"/openapi/v1/oauth/authorizations/self",
}

// shimConfig mirrors envoy/envoy.yaml's listener: x-authgate-* stripped before ext_authz, use_remote_address,
// normalize_path and merge_slashes, a 200 ms Check timeout with status_on_error 503, device-flow routes to deviceflow and
// the rest of /openapi/v1 to the upstream (Dify's API).
func shimConfig(authz authv3.AuthorizationClient, deviceflow, upstream *url.URL, logger *slog.Logger) envoyshim.Config {
	routes := []envoyshim.Route{{Prefix: "/openapi/v1", Upstream: upstream}}
	for _, p := range append(append([]string{}, deviceflowSelfAuthenticated...), deviceflowBearerRoutes...) {
		routes = append(routes, envoyshim.Route{Prefix: p, Upstream: deviceflow})
	}
	return envoyshim.Config{
		Authz:                      authz,
		Timeout:                    200 * time.Millisecond,
		StatusOnError:              503,
		DisabledPrefixes:           deviceflowSelfAuthenticated,
		StripRequestHeaderPrefixes: []string{"x-authgate-"},
		UseRemoteAddress:           true,
		MergeSlashes:               true,
		NormalizePath:              true,
		Routes:                     routes,
		Logger:                     logger,
	}
}
