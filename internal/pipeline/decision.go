// Package pipeline decides whether a request to Dify's /openapi/v1 API may reach the upstream (docs/reference/check.md). It is
// transport-neutral: the Envoy adapter (internal/extauthz) turns a CheckRequest into a Request and a Decision back into a
// CheckResponse; nothing here knows about Envoy, HTTP or SQL.
package pipeline

import (
	"net/netip"
	"time"
)

// Request is what the pipeline needs to know about one proxied request.
type Request struct {
	Method string
	// Path is the raw request target as the proxy saw it, query included ("/openapi/v1/apps?workspace_id=…").
	Path string
	// Headers are keyed by lower-cased name; repeated headers arrive joined with commas, as Envoy sends them.
	Headers map[string]string
	// ClientIP is the downstream peer; the zero value (unknown) shares one invalid-bearer budget.
	ClientIP  netip.Addr
	RequestID string
}

// Header is one header name (lower-cased) and value.
type Header struct {
	Name, Value string
}

// Code is the machine-readable error of a deny, the "error" field of its JSON body.
type Code string

const (
	CodeInvalidPath                Code = "invalid_path"
	CodeRouteNotFound              Code = "route_not_found"
	CodeBearerAuthDisabled         Code = "bearer_auth_disabled"
	CodeInvalidQuery               Code = "invalid_query"
	CodeBearerRequired             Code = "bearer_required"
	CodeInvalidRequest             Code = "invalid_request"
	CodeInvalidBearer              Code = "invalid_bearer"
	CodeRateLimited                Code = "rate_limited"
	CodeWrongSurface               Code = "wrong_surface"
	CodeInsufficientScope          Code = "insufficient_scope"
	CodeLicenseRequired            Code = "license_required"
	CodeAppNotFound                Code = "app_not_found"
	CodeServiceAPIDisabled         Code = "service_api_disabled"
	CodeWorkspaceUnavailable       Code = "workspace_unavailable"
	CodeWorkspaceMembershipRevoked Code = "workspace_membership_revoked"
	CodeSubjectNoAppAccess         Code = "subject_no_app_access"
	CodeAuthUnavailable            Code = "auth_unavailable"
)

// Decision is the outcome of a Check: an allow with the headers for the upstream, or a deny with the response for the client.
type Decision struct {
	Allow bool
	// Route is the matched route's name ("" when none matched): a low-cardinality label for metrics and logs.
	Route string

	// SetHeaders are the identity headers for the upstream (allow only), in a stable order.
	SetHeaders []Header
	// RemoveHeaders are request headers the proxy must strip before forwarding (allow only): every x-authgate-* header this
	// decision does not set, and authorization when it is not forwarded.
	RemoveHeaders []string
	// ResponseHeaders go on the upstream's response to the client (allow only): RateLimit-*.
	ResponseHeaders []Header
	// Metadata describes the caller for access logs (both outcomes).
	Metadata map[string]string

	// Status, Code and Message make the deny's JSON body {"error": Code, "message": Message}.
	Status  int
	Code    Code
	Message string
	// DenyHeaders go on the deny response (WWW-Authenticate, Retry-After).
	DenyHeaders []Header
	// RetryAfter is set on 429s; it becomes the body's retry_after_ms.
	RetryAfter time.Duration
}

func deny(status int, code Code, message string, headers ...Header) Decision {
	return Decision{Status: status, Code: code, Message: message, DenyHeaders: headers}
}

// The WWW-Authenticate values of RFC 6750 §3 that the bearer and scope steps answer with.
const (
	challengeBearer       = `Bearer realm="api"`
	challengeInvalidToken = `Bearer realm="api", error="invalid_token"`
)

func challengeInsufficientScope(scope string) string {
	return `Bearer realm="api", error="insufficient_scope", scope="` + scope + `"`
}

func denyInvalidBearer(message string) Decision {
	return deny(401, CodeInvalidBearer, message, Header{"www-authenticate", challengeInvalidToken})
}

func denyUnavailable() Decision {
	return deny(503, CodeAuthUnavailable, "authentication is temporarily unavailable; retry shortly")
}
