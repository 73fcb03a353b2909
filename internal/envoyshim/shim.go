// Package envoyshim is a small reverse proxy that authorizes every request by calling an ext_authz v3 gRPC server
// the way Envoy's ext_authz HTTP filter does (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz with a
// grpc_service), then forwards it to an upstream chosen by path prefix. It exists so devstack and end-to-end tests
// exercise extauthz through the same request shape and response semantics as production; production runs Envoy.
// Each behaviour names the Envoy field it mirrors.
package envoyshim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Route sends matching requests to Upstream (route.match -> route.cluster), or answers them itself (DirectResponse).
// Path matches one path exactly (route.match.path). Otherwise a Prefix ending in "/" matches as route.match.prefix, any
// other as route.match.path_separated_prefix: the path itself or the path followed by "/", so /device does not take
// /devices. Matching is on the normalized path as it is, escapes included, and case-sensitive, as Envoy's.
type Route struct {
	Path   string
	Prefix string
	// Upstream is scheme and host only: the request's path goes on unchanged (no prefix_rewrite).
	Upstream *url.URL
	// DirectResponse answers the request instead of an upstream (route.direct_response).
	DirectResponse *DirectResponse
	// AuthzDisabled skips the Check on this route (typed_per_filter_config ExtAuthzPerRoute{disabled: true}). It belongs to
	// the route, as in Envoy, so a path is never unchecked and sent to another route's upstream.
	AuthzDisabled bool
}

// DirectResponse is a route's direct_response with the route's response_headers_to_add.
type DirectResponse struct {
	Status int
	Body   string
	Header http.Header
}

func (r Route) matches(path string) bool {
	switch {
	case r.Path != "":
		return path == r.Path
	case strings.HasSuffix(r.Prefix, "/"):
		return strings.HasPrefix(path, r.Prefix)
	default:
		return path == r.Prefix || strings.HasPrefix(path, r.Prefix+"/")
	}
}

// Config describes the shim. Authz and at least one Route are required.
type Config struct {
	// Authz is the ext_authz client (ExtAuthz.grpc_service).
	Authz authv3.AuthorizationClient
	// Timeout bounds each Check (ExtAuthz.grpc_service.timeout); Envoy's default is 200 ms.
	Timeout time.Duration
	// StatusOnError answers a Check that fails or times out (ExtAuthz.status_on_error with failure_mode_allow: false).
	// Envoy's own default is 403; authgate's envoy.yaml sets 503 so clients retry, and so does this default.
	StatusOnError int
	// StripRequestHeaderPrefixes removes matching client headers before the Check, so neither extauthz nor the
	// upstream ever sees a client-supplied value (a header_mutation filter placed before ext_authz in Envoy; a
	// route-level request_headers_to_remove would run in the router, after ext_authz, and strip injected headers too).
	StripRequestHeaderPrefixes []string
	// RejectHeadersWithUnderscores answers 400 to a request with an underscore in a header name
	// (common_http_protocol_options.headers_with_underscores_action: REJECT_REQUEST): a WSGI upstream reads
	// x_authgate_account_id as x-authgate-account-id, past the stripping above.
	RejectHeadersWithUnderscores bool
	// UseRemoteAddress mirrors HttpConnectionManager.use_remote_address: true: the client's address is appended to
	// x-forwarded-for and x-forwarded-proto is set to the downstream scheme, before the Check.
	UseRemoteAddress bool
	// MergeSlashes, NormalizePath and EscapedSlashes mirror HttpConnectionManager.merge_slashes, normalize_path and
	// path_with_escaped_slashes_action: routing, the Check and the upstream see the path as Envoy normalizes it, and a path
	// Envoy refuses is answered 400 before anything else (normalizeTarget).
	MergeSlashes, NormalizePath bool
	EscapedSlashes              EscapedSlashesAction
	// PreserveExternalRequestID mirrors HttpConnectionManager.preserve_external_request_id: without it, and with
	// UseRemoteAddress, a client's x-request-id is replaced by a fresh one (Envoy trusts no client's id unless
	// internal_address_config names its address, which the shim has no equivalent of).
	PreserveExternalRequestID bool
	// Routes are matched exact paths first, then longest prefix first.
	Routes []Route
	// Transport reaches the upstreams; default http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives one line per failed Check or upstream error; default slog.Default().
	Logger *slog.Logger
}

// Shim is the proxy; it implements http.Handler.
type Shim struct {
	cfg   Config
	proxy *httputil.ReverseProxy
}

// New validates cfg and returns the proxy.
func New(cfg Config) (*Shim, error) {
	if cfg.Authz == nil {
		return nil, errors.New("envoyshim: Authz client is required")
	}
	if len(cfg.Routes) == 0 {
		return nil, errors.New("envoyshim: at least one route is required")
	}
	for _, r := range cfg.Routes {
		if (r.Path == "") == (r.Prefix == "") {
			return nil, fmt.Errorf("envoyshim: route %q%q needs a Path or a Prefix, not both", r.Path, r.Prefix)
		}
		switch {
		case r.DirectResponse != nil:
			if r.Upstream != nil || r.DirectResponse.Status < 200 || r.DirectResponse.Status > 599 {
				return nil, fmt.Errorf("envoyshim: route %q: a direct response needs a status and no upstream", r.Path+r.Prefix)
			}
		case r.Upstream == nil || r.Upstream.Scheme == "" || r.Upstream.Host == "" || strings.Trim(r.Upstream.Path, "/") != "":
			return nil, fmt.Errorf("envoyshim: route %q needs an upstream URL with a scheme and host and no path", r.Path+r.Prefix)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.StatusOnError == 0 {
		cfg.StatusOnError = http.StatusServiceUnavailable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Routes = sortedRoutes(cfg.Routes)
	s := &Shim{cfg: cfg}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: cfg.Transport,
		// Envoy's router does not buffer responses: each chunk from the upstream goes to the client as it arrives,
		// whatever the content type or length, so a server-sent event (an app run's first token) is not held until
		// the stream ends. ReverseProxy does that on its own only for text/event-stream and unknown lengths.
		FlushInterval:  -1,
		ModifyResponse: addResponseHeaders,
		ErrorHandler:   s.upstreamError,
	}
	return s, nil
}

func (s *Shim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.RejectHeadersWithUnderscores {
		for name := range r.Header {
			if strings.Contains(name, "_") {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
	}
	// The connection manager normalizes the path before any filter runs, and answers a path it refuses with 400 itself.
	target, ok := normalizeTarget(rawTarget(r), s.cfg.EscapedSlashes, s.cfg.NormalizePath, s.cfg.MergeSlashes)
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r = s.prepare(r, target)

	// Envoy's filter skips the Check when no route matches (getPerRouteFlags: no route -> skip) and the router then
	// answers 404 with an empty body.
	route, ok := s.route(target)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}

	if !route.AuthzDisabled {
		resp, err := s.check(r, target)
		switch {
		case err != nil:
			// failure_mode_allow: false -> a local reply with status_on_error and no body, never an allow.
			s.cfg.Logger.WarnContext(r.Context(), "ext_authz check failed", "error", err, "path", r.URL.Path)
			w.WriteHeader(s.cfg.StatusOnError)
			return
		case isOK(resp):
			r = applyOK(r, resp.GetOkResponse())
		case resp.GetErrorResponse() != nil:
			// CheckResponse.error_response: an error, not a denial; its status, else status_on_error.
			writeLocalReply(w, resp.GetErrorResponse(), s.cfg.StatusOnError)
			return
		default:
			writeLocalReply(w, resp.GetDeniedResponse(), http.StatusForbidden)
			return
		}
	}
	if d := route.DirectResponse; d != nil {
		for k, v := range d.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(d.Status)
		_, _ = io.WriteString(w, d.Body)
		return
	}
	// Envoy streams a request and its response at once. Go's HTTP/1 server instead closes the request body once the
	// response headers go out, so a streamed answer (flushed at once, above) raced the proxy still sending the
	// request: the body's final read failed and the upstream connection was torn down mid-stream. The error only
	// means the server cannot do it (HTTP/2 always can), so it is ignored.
	_ = http.NewResponseController(w).EnableFullDuplex()
	s.proxy.ServeHTTP(w, r)
}

// check sends the CheckRequest under the filter's timeout (grpc_service.timeout).
func (s *Shim) check(r *http.Request, target string) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	return s.cfg.Authz.Check(ctx, checkRequest(r, target, time.Now()))
}

func (s *Shim) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	s.cfg.Logger.WarnContext(r.Context(), "upstream request failed", "error", err, "path", r.URL.Path)
	// Envoy's router answers a failed upstream connection with this 503 local reply.
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
}
