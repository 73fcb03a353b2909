package deviceflow

import (
	"net/http"
	"strings"
)

// apiPrefix is where Dify serves the OpenAPI; Envoy routes these paths to deviceflow.
const apiPrefix = "/openapi/v1"

// routes registers every route of SPEC §4. The SSO branch and the /device page are served by sso*.go and page*.go.
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
	api("GET /oauth/device/sso-initiate", s.enterpriseOnly(s.handleSSOInitiate))
	api("GET /oauth/device/sso-complete", s.enterpriseOnly(s.handleSSOComplete))
	mux.Handle("GET /device/sso-complete", s.serve(s.enterpriseOnly(s.handleSSOComplete)))
	api("GET /oauth/device/approval-context", s.enterpriseOnly(s.handleApprovalContext))
	api("POST /oauth/device/approve-external", s.enterpriseOnly(s.handleApproveExternal))
	api("POST /oauth/device/deny-external", s.enterpriseOnly(s.handleDenyExternal))

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

	mux.Handle("/", s.serve(func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, codeNotFound, "no such endpoint")
	}))
	return mux
}
