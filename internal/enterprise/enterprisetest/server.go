// Package enterprisetest is a fake of Dify's enterprise service for tests: the endpoints authgate calls, with
// Dify's paths and JSON shapes, knobs to change its answers, and a record of what it received.
package enterprisetest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// SecretHeader is the header Dify's EnterpriseRequest sends the secret in.
const SecretHeader = "Enterprise-Api-Secret-Key"

// Server is a fake enterprise service. Its setters are safe to call while requests are in flight. Defaults: license
// "active", every app "private" with nobody allowed, sso-initiate answers URL()+"/idp/login".
type Server struct {
	srv    *httptest.Server
	secret string

	mu         sync.Mutex
	license    string
	modes      map[string]string
	allowed    map[[2]string]bool
	ssoURL     string
	delay      time.Duration
	failStatus int
	override   http.Handler
	requests   []Request
}

// Request is one call the fake received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// NewServer starts a fake enterprise service, closed when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		secret:  rand.Text(),
		license: "active",
		modes:   map[string]string{},
		allowed: map[[2]string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", s.info)
	mux.HandleFunc("GET /webapp/access-mode/id", s.accessMode)
	mux.HandleFunc("GET /webapp/permission", s.permission)
	mux.HandleFunc("POST /device-flow/sso-initiate", s.ssoInitiate)
	s.srv = httptest.NewServer(s.front(mux))
	s.ssoURL = s.srv.URL + "/idp/login"
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the base URL to pass as ENTERPRISE_API_URL.
func (s *Server) URL() string { return s.srv.URL }

// SecretKey is the secret the fake expects (ENTERPRISE_API_SECRET_KEY); calls without it get 401.
func (s *Server) SecretKey() string { return s.secret }

// SetLicenseStatus sets what GET /info reports as License.status; "" leaves the License object out.
func (s *Server) SetLicenseStatus(status string) { s.locked(func() { s.license = status }) }

// SetAccessMode sets the access mode of an app.
func (s *Server) SetAccessMode(appID, mode string) { s.locked(func() { s.modes[appID] = mode }) }

// AllowUser lets userID use appID (GET /webapp/permission answers true).
func (s *Server) AllowUser(userID, appID string) {
	s.locked(func() { s.allowed[[2]string{userID, appID}] = true })
}

// DisallowUser takes back AllowUser.
func (s *Server) DisallowUser(userID, appID string) {
	s.locked(func() { delete(s.allowed, [2]string{userID, appID}) })
}

// SetSSOInitiateURL sets the url POST /device-flow/sso-initiate answers with.
func (s *Server) SetSSOInitiateURL(u string) { s.locked(func() { s.ssoURL = u }) }

// SetDelay delays every answer by d (or until the client gives up).
func (s *Server) SetDelay(d time.Duration) { s.locked(func() { s.delay = d }) }

// FailWith makes every call answer status with an empty JSON body (e.g. 503); 0 stops failing.
func (s *Server) FailWith(status int) { s.locked(func() { s.failStatus = status }) }

// Override sends every call to h instead (oversized, malformed or redirecting answers); nil restores the fake.
// Calls are still recorded and still delayed.
func (s *Server) Override(h http.Handler) { s.locked(func() { s.override = h }) }

// Requests returns the calls received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// RequestCount is len(Requests()) without the copy.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// front records the call, applies delay, failure injection and the override, and checks the secret.
func (s *Server) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.mu.Lock()
		s.requests = append(s.requests, Request{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body,
		})
		delay, fail, override := s.delay, s.failStatus, s.override
		s.mu.Unlock()

		if delay > 0 {
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				timer.Stop()
				return
			}
		}
		switch {
		case fail != 0:
			writeJSON(w, fail, map[string]string{})
		case override != nil:
			override.ServeHTTP(w, r)
		case r.Header.Get(SecretHeader) != s.secret:
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "invalid secret key"})
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (s *Server) info(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	license := s.license
	s.mu.Unlock()
	body := map[string]any{}
	if license != "" {
		body["License"] = map[string]any{"status": license, "expiredAt": ""}
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) accessMode(w http.ResponseWriter, r *http.Request) {
	appID := r.URL.Query().Get("appId")
	if appID == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "appId is required"})
		return
	}
	s.mu.Lock()
	mode, ok := s.modes[appID]
	s.mu.Unlock()
	if !ok {
		mode = "private"
	}
	writeJSON(w, http.StatusOK, map[string]string{"accessMode": mode})
}

func (s *Server) permission(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	ok := s.allowed[[2]string{q.Get("userId"), q.Get("appId")}]
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"result": ok})
}

func (s *Server) ssoInitiate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		SignedState string `json:"signed_state"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.SignedState == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "signed_state is required"})
		return
	}
	s.mu.Lock()
	u := s.ssoURL
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"url": u})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
