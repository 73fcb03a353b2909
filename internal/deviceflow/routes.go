package deviceflow

import (
	"net/http"
	"strings"
)

// apiPrefix is where Dify serves the OpenAPI; Envoy routes these paths to deviceflow.
const apiPrefix = "/openapi/v1"

// routes registers every route of the device-flow service (docs/architecture.md). The SSO branch and the /device page are
// served by sso*.go and page*.go.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	api := func(pattern string, h handlerFunc) {
		method, path, _ := strings.Cut(pattern, " ")
		mux.Handle(method+" "+apiPrefix+path, s.serve(h))
	}

	api("POST /oauth/device/code", s.handleDeviceCode)
	api("POST /oauth/device/token", s.handleDeviceToken)
	api("GET /oauth/device/lookup", s.handleLookup)
	api("POST /oauth/device/approve", s.handleApprove)
	api("POST /oauth/device/deny", s.handleDeny)

	// The SSO branch, served only when ENTERPRISE_ENABLED (404 on CE).
	api("GET /oauth/device/sso-initiate", s.enterpriseOnly(s.handleSSOInitiateLink))
	api("POST /oauth/device/sso-initiate", s.enterpriseOnly(s.handleSSOInitiate))
	api("GET /oauth/device/sso-complete", s.enterpriseOnly(s.handleSSOComplete))
	api("GET /device/sso-complete", s.enterpriseOnly(s.handleSSOComplete)) // the IdP callback's second mount, also under the prefix
	api("GET /oauth/device/approval-context", s.enterpriseOnly(s.handleApprovalContext))
	api("POST /oauth/device/approve-external", s.enterpriseOnly(s.handleApproveExternal))
	api("POST /oauth/device/deny-external", s.enterpriseOnly(s.handleDenyExternal))

	// The GitHub branch, served only when GitHub sign-in is configured (404 otherwise; githubsignin.go). Its callback is under
	// the page's path, on the page's origin.
	api("POST /oauth/device/github/start", s.githubOnly(s.handleGitHubStart))
	api("GET /oauth/device/github/context", s.githubOnly(s.handleGitHubContext))
	mux.Handle("GET "+githubCallbackPath, s.serve(s.githubOnly(s.handleGitHubCallback)))

	api("GET /me", s.handleMe)
	api("GET /account", s.handleMe)
	api("GET /account/sessions", s.handleListSessions)
	api("DELETE /oauth/authorizations/self", s.handleRevokeSelf)
	api("DELETE /account/sessions/self", s.handleRevokeSelf)
	api("DELETE /account/sessions/{session_id}", s.handleRevokeSession)
	api("POST /oauth/revoke", s.handleRevoke)

	metadata := s.serve(s.handleMetadata)
	mux.Handle("GET /.well-known/oauth-authorization-server"+apiPrefix, metadata)
	mux.Handle("GET "+apiPrefix+"/.well-known/oauth-authorization-server", metadata)

	// The /device page (page*.go, web/).
	mux.Handle("GET /device", s.serve(s.handleDevicePage))
	mux.Handle("GET /device/static/{name}", s.serve(s.handleStatic))
	mux.Handle("GET /device/details", s.serve(s.handleDeviceDetails))
	return mux
}

// jsonFallback answers what the mux has no route for (404, or 405 with Allow) with the JSON error body instead of the
// mux's plain text.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, "this endpoint does not accept "+r.Method)
			return
		}
		writeError(w, http.StatusNotFound, codeNotFound, "no such endpoint")
	})
}

// statusProbe records what the mux's own not-found or method-not-allowed handler would answer, and discards its body.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(status int)      { p.status = status }
