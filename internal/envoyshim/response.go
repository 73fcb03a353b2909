package envoyshim

import (
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// isOK mirrors the filter's decision: CheckResponse.status.code OK allows. Like Envoy, a response without a status
// (code 0) counts as OK; extauthz always sets one.
func isOK(resp *authv3.CheckResponse) bool {
	return codes.Code(resp.GetStatus().GetCode()) == codes.OK
}

type responseHeadersKey struct{}

// applyOK applies OkHttpResponse to the request that goes upstream.
func applyOK(r *http.Request, ok *authv3.OkHttpResponse) *http.Request {
	// OkHttpResponse.headers, each with its append semantics.
	for _, opt := range ok.GetHeaders() {
		if isPseudoOrHost(opt.GetHeader().GetKey()) {
			continue // Envoy refuses to mutate pseudo-headers and host through ext_authz.
		}
		applyHeaderOption(r.Header, opt)
	}
	// OkHttpResponse.headers_to_remove, applied after the sets (as Envoy does; extauthz never lists a header it sets).
	for _, name := range ok.GetHeadersToRemove() {
		if isPseudoOrHost(name) {
			continue
		}
		r.Header.Del(name)
	}
	// OkHttpResponse.query_parameters_to_set (replace) then query_parameters_to_remove.
	if len(ok.GetQueryParametersToSet()) > 0 || len(ok.GetQueryParametersToRemove()) > 0 {
		q, _ := url.ParseQuery(r.URL.RawQuery)
		for _, p := range ok.GetQueryParametersToSet() {
			q.Set(p.GetKey(), p.GetValue())
		}
		for _, name := range ok.GetQueryParametersToRemove() {
			q.Del(name)
		}
		r.URL.RawQuery = q.Encode()
	}
	// OkHttpResponse.response_headers_to_add go on the upstream's response to the client.
	if extra := ok.GetResponseHeadersToAdd(); len(extra) > 0 {
		r = r.WithContext(context.WithValue(r.Context(), responseHeadersKey{}, extra))
	}
	return r
}

func addResponseHeaders(resp *http.Response) error {
	if extra, ok := resp.Request.Context().Value(responseHeadersKey{}).([]*corev3.HeaderValueOption); ok {
		for _, opt := range extra {
			applyHeaderOption(resp.Header, opt)
		}
	}
	return nil
}

// applyHeaderOption applies one HeaderValueOption as Envoy's ext_authz client does. The deprecated append field,
// when present, wins: true joins the value into the existing header with "," (appendCopy), false overwrites.
// Otherwise append_action decides; its default APPEND_IF_EXISTS_OR_ADD adds a second header line (addCopy), and an
// unknown action is treated as OVERWRITE_IF_EXISTS_OR_ADD. Empty values are dropped unless keep_empty_value is set.
func applyHeaderOption(h http.Header, opt *corev3.HeaderValueOption) {
	key := opt.GetHeader().GetKey()
	value := opt.GetHeader().GetValue()
	if value == "" && len(opt.GetHeader().GetRawValue()) > 0 {
		value = string(opt.GetHeader().GetRawValue()) // HeaderValue.raw_value
	}
	if key == "" || (value == "" && !opt.GetKeepEmptyValue()) {
		return
	}
	canonical := http.CanonicalHeaderKey(key)
	existing, exists := h[canonical]
	if a := opt.GetAppend(); a != nil {
		if a.GetValue() && exists {
			h[canonical] = []string{strings.Join(append(existing, value), ",")}
		} else {
			h.Set(key, value)
		}
		return
	}
	switch opt.GetAppendAction() {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		h.Add(key, value)
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if !exists {
			h.Set(key, value)
		}
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if exists {
			h.Set(key, value)
		}
	default: // OVERWRITE_IF_EXISTS_OR_ADD and unknown actions
		h.Set(key, value)
	}
}

func isPseudoOrHost(name string) bool {
	return strings.HasPrefix(name, ":") || strings.EqualFold(name, "host")
}

// writeLocalReply sends a DeniedHttpResponse (CheckResponse.denied_response or error_response) as Envoy's local
// reply: its status (fallback when unset), its headers (each named header first cleared, then every value added, so
// repeated set-cookie survive) and its body; a body without a content-type goes out as text/plain, as Envoy's local
// replies do.
func writeLocalReply(w http.ResponseWriter, reply *authv3.DeniedHttpResponse, fallback int) {
	// Envoy passes the status as given and uses the fallback only when it is unset (0). One Go cannot send as a final
	// response gets the fallback too: Go's server panics below 100 or above 999, and sends a 1xx as informational, then
	// 200 for the body.
	status := int(reply.GetStatus().GetCode())
	if status < 200 || status > 999 {
		status = fallback
	}
	for _, opt := range reply.GetHeaders() {
		w.Header().Del(opt.GetHeader().GetKey())
	}
	for _, opt := range reply.GetHeaders() {
		key, value := opt.GetHeader().GetKey(), opt.GetHeader().GetValue()
		if key == "" || isPseudoOrHost(key) {
			continue
		}
		w.Header().Add(key, value)
	}
	if reply.GetBody() != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reply.GetBody())
}

// route picks the route of a target: exact paths first, then the longest matching prefix. The query takes no part.
func (s *Shim) route(target string) (Route, bool) {
	path, _, _ := strings.Cut(target, "?")
	for _, r := range s.cfg.Routes {
		if r.matches(path) {
			return r, true
		}
	}
	return Route{}, false
}

func sortedRoutes(routes []Route) []Route {
	out := append([]Route(nil), routes...)
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].Path != "") != (out[j].Path != "") {
			return out[i].Path != ""
		}
		return len(out[i].Prefix) > len(out[j].Prefix)
	})
	return out
}

// rewrite forwards to the route's upstream. The normalized target and the Host header go through unchanged (no
// prefix_rewrite, no host_rewrite); x-forwarded-* and x-request-id are kept as the shim (Envoy's HCM) set them.
func (s *Shim) rewrite(pr *httputil.ProxyRequest) {
	target := targetOf(pr.In)
	route, _ := s.route(target)
	pr.SetURL(route.Upstream)
	setTarget(pr.Out.URL, target)
	// The query as the Check's query_parameters_to_set and _to_remove left it (applyOK).
	pr.Out.URL.RawQuery, pr.Out.URL.ForceQuery = pr.In.URL.RawQuery, pr.In.URL.ForceQuery
	pr.Out.Host = pr.In.Host
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
}
