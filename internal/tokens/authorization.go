package tokens

import "strings"

// MaxAuthorization bounds the Authorization header value that is parsed; a longer one is an invalid bearer.
const MaxAuthorization = 4 << 10

// AuthorizationOutcome says what an Authorization header holds.
type AuthorizationOutcome int

const (
	BearerPresent  AuthorizationOutcome = iota // one Bearer credential
	BearerMissing                              // no Bearer credential (absent, empty, another scheme)
	BearerSeveral                              // more than one credential
	BearerTooLarge                             // over MaxAuthorization
)

// ParseAuthorization extracts the credential of an `Authorization: Bearer <token>` value (RFC 6750 §2.1), the one parser both
// services use. The scheme is case-insensitive (RFC 9110 §11.1). Envoy joins repeated headers with commas, and a credential
// never contains a comma or a space, so either means several. The credential's own format is Parse's business.
func ParseAuthorization(value string) (string, AuthorizationOutcome) {
	if len(value) > MaxAuthorization {
		return "", BearerTooLarge
	}
	value = strings.Trim(value, " \t")
	if value == "" {
		return "", BearerMissing
	}
	if strings.Contains(value, ",") {
		return "", BearerSeveral
	}
	scheme, rest, _ := strings.Cut(value, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return "", BearerMissing
	}
	token := strings.Trim(rest, " \t")
	if token == "" {
		return "", BearerMissing
	}
	if strings.ContainsAny(token, " \t") {
		return "", BearerSeveral
	}
	return token, BearerPresent
}
