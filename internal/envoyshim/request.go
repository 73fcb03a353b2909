package envoyshim

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// hopByHop headers belong to the downstream connection; Envoy's codec consumes them, so neither the Check nor the
// upstream sees them.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

// prepare returns the request as Envoy's filters see it when ext_authz runs: trace context extracted, client-supplied
// authgate headers stripped, a request id assigned, forwarding headers set, the path normalized.
func (s *Shim) prepare(in *http.Request) *http.Request {
	// HttpConnectionManager.tracing with the W3C propagator: an incoming traceparent becomes the parent of the Check
	// (an otelgrpc-instrumented Authz client sends it on) and is forwarded upstream as a header anyway.
	ctx := otel.GetTextMapPropagator().Extract(in.Context(), propagation.HeaderCarrier(in.Header))
	r := in.Clone(ctx)
	for name := range r.Header {
		lower := strings.ToLower(name)
		for _, prefix := range s.cfg.StripRequestHeaderPrefixes {
			if strings.HasPrefix(lower, strings.ToLower(prefix)) {
				r.Header.Del(name)
			}
		}
	}
	// HttpConnectionManager.generate_request_id (default true): a request without x-request-id gets a UUID, which
	// the filter then sends as attributes.request.http.id and the router forwards upstream. (Envoy at the edge
	// replaces a client's id unless preserve_external_request_id is set; the shim keeps it, as that option does.)
	if r.Header.Get("X-Request-Id") == "" {
		r.Header.Set("X-Request-Id", uuid.NewString())
	}
	if s.cfg.UseRemoteAddress {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			ip := ap.Addr().Unmap().String()
			if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
				ip = strings.Join(prior, ", ") + ", " + ip
			}
			r.Header.Set("X-Forwarded-For", ip)
		}
		r.Header.Set("X-Forwarded-Proto", downstreamScheme(r))
	}
	if s.cfg.MergeSlashes || s.cfg.NormalizePath {
		normalizePath(r, s.cfg.MergeSlashes, s.cfg.NormalizePath)
	}
	return r
}

// checkRequest builds the CheckRequest the ext_authz filter sends for r.
func checkRequest(r *http.Request, now time.Time) *authv3.CheckRequest {
	path := requestPath(r)
	scheme := downstreamScheme(r)
	// headers: lowercased names, repeated headers joined with "," (Envoy's header map merge), and the HTTP/2-style
	// pseudo-headers Envoy keeps in the same map even for HTTP/1 requests. Host lives in :authority, not "host".
	headers := make(map[string]string, len(r.Header)+4)
	for name, values := range r.Header {
		lower := strings.ToLower(name)
		if hopByHop[lower] {
			continue
		}
		headers[lower] = strings.Join(values, ",")
	}
	headers[":authority"] = r.Host
	headers[":method"] = r.Method
	headers[":path"] = path
	headers[":scheme"] = scheme

	size := r.ContentLength // attributes.request.http.size: -1 when unknown, as Envoy documents.
	if size < 0 {
		size = -1
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(localAddr(r))},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(now),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       r.Header.Get("X-Request-Id"),
				Method:   r.Method,
				Headers:  headers,
				Path:     path, // path including the query; Envoy leaves the query and fragment fields empty.
				Host:     r.Host,
				Scheme:   scheme,
				Size:     size,
				Protocol: protocol(r),
			},
		},
	}}
}

// requestPath is the request target still percent-encoded as the client sent it (EscapedPath keeps the raw
// form), query included: what Envoy puts in :path.
func requestPath(r *http.Request) string {
	return r.URL.RequestURI()
}

func downstreamScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func protocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "HTTP/2"
	case 3:
		return "HTTP/3"
	default:
		return "HTTP/1." + strconv.Itoa(r.ProtoMinor)
	}
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

// socketAddress renders "ip:port" as Envoy's Address.socket_address; nil when it does not parse.
func socketAddress(hostport string) *corev3.Address {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ap.Addr().Unmap().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}
