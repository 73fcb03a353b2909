package pipeline

import "strings"

// maxAuthorization bounds the Authorization header we parse; a longer one is an invalid bearer (docs/reference/check.md, bearer step).
const maxAuthorization = 4 << 10

type bearerOutcome int

const (
	bearerOK       bearerOutcome = iota
	bearerMissing                // no Bearer credentials: 401 bearer_required
	bearerSeveral                // more than one credential: 400 invalid_request
	bearerTooLarge               // over 4 KiB: 401 invalid_bearer
)

// parseBearer extracts the token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive (RFC 7235).
// The token itself is not validated here: its format is the token step's business.
func parseBearer(value string) (string, bearerOutcome) {
	if len(value) > maxAuthorization {
		return "", bearerTooLarge
	}
	value = strings.Trim(value, " \t")
	if value == "" {
		return "", bearerMissing
	}
	// Envoy joins repeated headers with commas; a credential never contains one.
	if strings.Contains(value, ",") {
		return "", bearerSeveral
	}
	scheme, rest, _ := strings.Cut(value, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return "", bearerMissing
	}
	token := strings.Trim(rest, " \t")
	if token == "" {
		return "", bearerMissing
	}
	if strings.ContainsAny(token, " \t") {
		return "", bearerSeveral
	}
	return token, bearerOK
}
