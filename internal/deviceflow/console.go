package deviceflow

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// consolePassportSubject is the sub claim of Dify's console login JWT.
const consolePassportSubject = "Console API Passport"

// maxJWTLen bounds what is handed to the JWT parser; Dify's passports are a few hundred bytes.
const maxJWTLen = 8 << 10

// consoleCookieName is Dify's cookie naming rule: the __Host- prefix when the console is served over https on both URLs
// and cookies are not shared with a parent domain (a __Host- cookie cannot carry a Domain).
func (s *Server) consoleCookieName(name string) string {
	if strings.HasPrefix(s.cfg.ConsoleWebURL, "https://") && strings.HasPrefix(s.cfg.ConsoleAPIURL, "https://") &&
		s.cfg.CookieDomain == "" {
		return "__Host-" + name
	}
	return name
}

// consoleUserID returns the account id of the Dify console session in the access_token cookie. The session is read from
// the cookie only, never from Authorization: a bearer token must not approve devices.
func (s *Server) consoleUserID(r *http.Request) (string, *apiError) {
	loginRequired := errorf(http.StatusUnauthorized, codeLoginRequired, "sign in to the Dify console first")
	c, err := r.Cookie(s.consoleCookieName("access_token"))
	if err != nil || c.Value == "" {
		return "", loginRequired
	}
	claims, ok := s.verifyPassport(c.Value)
	if !ok || claims["sub"] != consolePassportSubject {
		return "", loginRequired
	}
	userID, _ := claims["user_id"].(string)
	if userID == "" {
		return "", loginRequired
	}
	return userID, nil
}

// checkCSRF is Dify's check_csrf_token: the X-CSRF-Token header equals the csrf_token cookie, and is an unexpired HS256
// JWT from SECRET_KEY issued for this user. Dify's tokens carry the user in user_id; a token with only sub is read by sub.
func (s *Server) checkCSRF(r *http.Request, userID string) *apiError {
	invalid := errorf(http.StatusForbidden, codeCSRFInvalid, "the CSRF token is missing or invalid")
	header := r.Header.Get("X-CSRF-Token")
	c, err := r.Cookie(s.consoleCookieName("csrf_token"))
	if err != nil || header == "" || subtle.ConstantTimeCompare([]byte(header), []byte(c.Value)) != 1 {
		return invalid
	}
	claims, ok := s.verifyPassport(header)
	if !ok {
		return invalid
	}
	owner, hasUserID := claims["user_id"].(string)
	if !hasUserID {
		owner, _ = claims["sub"].(string)
	}
	if owner == "" || owner != userID {
		return invalid
	}
	return nil
}

// verifyPassport verifies a Dify PassportService JWT: HS256 only (the algorithm is pinned, so "none" or RS256 with the
// secret as a public key are refused), signed with SECRET_KEY, with an exp in the future.
func (s *Server) verifyPassport(raw string) (jwt.MapClaims, bool) {
	if len(raw) > maxJWTLen {
		return nil, false
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return []byte(s.cfg.SecretKey), nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now))
	return claims, err == nil
}
