package envoyshim

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
// authgate headers stripped, a request id assigned, forwarding headers set, the normalized target in place.
func (s *Shim) prepare(in *http.Request, target string) *http.Request {
	// HttpConnectionManager.tracing with the W3C propagator: an incoming traceparent becomes the parent of the Check
	// (an otelgrpc-instrumented Authz client sends it on) and is forwarded upstream as a header anyway.
	ctx := otel.GetTextMapPropagator().Extract(in.Context(), propagation.HeaderCarrier(in.Header))
	r := in.Clone(context.WithValue(ctx, targetKey{}, target))
	for name := range r.Header {
		lower := strings.ToLower(name)
		for _, prefix := range s.cfg.StripRequestHeaderPrefixes {
			if strings.HasPrefix(lower, strings.ToLower(prefix)) {
				r.Header.Del(name)
			}
		}
	}
	// HttpConnectionManager.generate_request_id (default true): a request without x-request-id gets a UUID, which the
	// router forwards upstream; at the edge (use_remote_address, from a client no internal_address_config trusts) a
	// client's own id is replaced too, unless preserve_external_request_id is set.
	if r.Header.Get("X-Request-Id") == "" || (s.cfg.UseRemoteAddress && !s.cfg.PreserveExternalRequestID) {
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
	setTarget(r.URL, target)
	r.RequestURI = target
	return r
}

// rawTarget is the request target as the client sent it (:path), before Go's URL parsing could re-encode any of it. An
// absolute-form target (GET http://host/path) is reduced to its path, as Envoy's HTTP/1 codec does.
func rawTarget(r *http.Request) string {
	t := r.RequestURI
	if t == "" { // a request built in-process, not read off a connection
		return r.URL.RequestURI()
	}
	if strings.HasPrefix(t, "/") || t == "*" {
		return t
	}
	if _, rest, ok := strings.Cut(t, "://"); ok {
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			if rest[i] == '?' {
				return "/" + rest[i:]
			}
			return rest[i:]
		}
		return "/"
	}
	return t
}

// setTarget makes u's path and query the target exactly, so the upstream receives the bytes Envoy would send: as Path
// and RawPath where Go's encoding reproduces them, else as Opaque (a % that starts no escape, a \ after unescaping).
func setTarget(u *url.URL, target string) {
	path, query, hasQuery := strings.Cut(target, "?")
	u.RawQuery, u.ForceQuery = query, hasQuery && query == ""
	u.Opaque = ""
	if unescaped, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = unescaped, path
		if u.EscapedPath() == path {
			return
		}
	}
	u.Path, u.RawPath, u.Opaque = "", "", path
}

type targetKey struct{}

// targetOf is the normalized target prepare put in the request's context.
func targetOf(r *http.Request) string {
	t, _ := r.Context().Value(targetKey{}).(string)
	return t
}

// checkRequest builds the CheckRequest the ext_authz filter sends for r, whose normalized target is path
// (CheckRequestUtils::createHttpCheck).
func checkRequest(r *http.Request, path string, now time.Time) *authv3.CheckRequest {
	scheme := downstreamScheme(r)
	// headers: lowercased names, repeated headers joined with "," (Envoy's header map merge), and the HTTP/2-style
	// pseudo-headers Envoy keeps in the same map even for HTTP/1 requests. Host lives in :authority, not "host". A value
	// that is not UTF-8 (obs-text, Latin-1) has each bad byte replaced by "!", as Envoy does for the proto string:
	// otherwise the Check could not be marshalled and the request would end in status_on_error without one.
	headers := make(map[string]string, len(r.Header)+4)
	for name, values := range r.Header {
		lower := strings.ToLower(name)
		if hopByHop[lower] {
			continue
		}
		headers[lower] = sanitizeUTF8(strings.Join(values, ","))
	}
	headers[":authority"] = sanitizeUTF8(r.Host)
	headers[":method"] = r.Method
	headers[":path"] = path
	headers[":scheme"] = scheme

	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(localAddr(r))},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(now),
			Http: &authv3.AttributeContext_HttpRequest{
				// Envoy's stream id, a random 64-bit number in decimal, not x-request-id (which is in the headers).
				Id:      strconv.FormatUint(rand.Uint64(), 10),
				Method:  r.Method,
				Headers: headers,
				Path:    path, // path including the query; Envoy leaves the query and fragment fields empty.
				Host:    headers[":authority"],
				Scheme:  scheme,
				// The bytes of the body received so far (StreamInfo::bytesReceived): the Check goes out when the headers
				// are decoded, before any body byte, as no with_request_body is configured.
				Size:     0,
				Protocol: protocol(r),
			},
		},
	}}
}

// sanitizeUTF8 replaces each byte that is not part of a valid UTF-8 sequence with "!" (MessageUtil::sanitizeUtf8String):
// one "!" per bad byte, unlike strings.ToValidUTF8, which replaces a run with one.
func sanitizeUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, '!')
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return string(b)
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
