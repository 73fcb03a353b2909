package deviceflow

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func consoleOnlyServer() *Server {
	return &Server{cfg: Config{SecretKey: flowSecret, ConsoleWebURL: "http://c", ConsoleAPIURL: "http://a"}, now: time.Now}
}

// FuzzConsoleSession feeds arbitrary cookie and header values to the console-session and CSRF checks: they must never
// panic, and must accept nothing that is not an HS256 JWT signed with SECRET_KEY.
func FuzzConsoleSession(f *testing.F) {
	exp := time.Now().Add(time.Hour).Unix()
	good := signHS256(f, flowSecret, jwt.MapClaims{"sub": consolePassportSubject, "user_id": "u1", "exp": exp})
	csrf := signHS256(f, flowSecret, jwt.MapClaims{"user_id": "u1", "exp": exp})
	f.Add(good, csrf, csrf)
	f.Add("eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoidTEifQ.", "", "x")
	f.Add("a.b.c", "a.b.c", "a.b.c")
	f.Add("", "", "")
	f.Add(good+"x", csrf, csrf[:len(csrf)-1])
	s := consoleOnlyServer()
	f.Fuzz(func(t *testing.T, session, csrfCookie, csrfHeader string) {
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		req.Header.Set("Cookie", "access_token="+session+"; csrf_token="+csrfCookie)
		req.Header.Set("X-CSRF-Token", csrfHeader)
		userID, apiErr := s.consoleUserID(req)
		if apiErr != nil {
			if apiErr.Status != http.StatusUnauthorized {
				t.Fatalf("session refusal status %d", apiErr.Status)
			}
			return
		}
		if session != good && userID != "" {
			// Any other accepted session must verify under the secret with HS256.
			if _, err := jwt.Parse(session, func(*jwt.Token) (any, error) { return []byte(flowSecret), nil },
				jwt.WithValidMethods([]string{"HS256"})); err != nil {
				t.Fatalf("accepted a session that does not verify: %q", session)
			}
		}
		if apiErr := s.checkCSRF(req, userID); apiErr != nil && apiErr.Status != http.StatusForbidden {
			t.Fatalf("csrf refusal status %d", apiErr.Status)
		}
	})
}
