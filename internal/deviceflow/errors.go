package deviceflow

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/authgate/authgate/internal/redisclient"
)

// Error codes of the JSON error body. RFC 6749/8628 codes keep their registered spelling.
const (
	codeInvalidRequest       = "invalid_request"
	codeInvalidClient        = "invalid_client"
	codeInvalidGrant         = "invalid_grant"
	codeUnsupportedGrantType = "unsupported_grant_type"
	codeExpiredToken         = "expired_token"
	codeAccessDenied         = "access_denied"
	codeAuthorizationPending = "authorization_pending"
	codeSlowDown             = "slow_down"
	codeRateLimited          = "rate_limited"
	codeRequestTooLarge      = "request_too_large"
	codeLoginRequired        = "login_required"
	codeCSRFInvalid          = "csrf_invalid"
	codeAccountInactive      = "account_inactive"
	codeExpiredOrUnknown     = "expired_or_unknown"
	codeAlreadyResolved      = "already_resolved"
	codeInvalidToken         = "invalid_token"
	codeNotFound             = "not_found"
	codeMethodNotAllowed     = "method_not_allowed"
	codeUnavailable          = "temporarily_unavailable"

	// The SSO branch's.
	codeInvalidUserCode     = "invalid_user_code"
	codeSSOInitiateFailed   = "sso_initiate_failed"
	codeInvalidSSOAssertion = "invalid_sso_assertion"
	codeUserCodeNotPending  = "user_code_not_pending"
	codeInvalidSession      = "invalid_session"
	codeUserCodeMismatch    = "user_code_mismatch"
	codeEmailIsDifyAccount  = "email_belongs_to_dify_account"
	codeSessionAlreadyUsed  = "session_already_consumed"
)

// apiError is an answer for the client; handlers return it and serve writes it in one place.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}

// writeError writes {"error": code, "message": message} with status.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, message})
}

// writeJSON encodes v fully before writing anything, so an encoding failure never leaves a partial response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"server_error","message":"response encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// The dependencies whose failures become 503 temporarily_unavailable.
const (
	depRedis    = "redis"
	depPostgres = "postgres"
)

// dependencyError is a failure of Redis or Postgres: the decision the request needs cannot be made. It unwraps to the
// cause, so errors.Is still sees sentinels through it.
type dependencyError struct {
	dep string
	op  string
	err error
}

func (e *dependencyError) Error() string { return "deviceflow: " + e.op + ": " + e.err.Error() }
func (e *dependencyError) Unwrap() error { return e.err }

func redisFailure(op string, err error) error {
	return &dependencyError{dep: depRedis, op: op, err: err}
}

func postgresFailure(op string, err error) error {
	return &dependencyError{dep: depPostgres, op: op, err: err}
}

// dependencyOf names the dependency behind a failure that is not a client error, for its log line and metric. Redis's
// breaker error is recognised wherever it comes from; anything unmarked is reported as "internal".
func dependencyOf(err error) string {
	var depErr *dependencyError
	switch {
	case errors.As(err, &depErr):
		return depErr.dep
	case errors.Is(err, redisclient.ErrUnavailable):
		return depRedis
	}
	return "internal"
}
