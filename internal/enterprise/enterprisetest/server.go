// Package enterprisetest is a fake of Dify's enterprise service for tests.
package enterprisetest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Server is a fake enterprise service. Its setters are safe to call while requests are in flight.
type Server struct {
	srv *httptest.Server
	mu  sync.Mutex
}

// NewServer starts a fake enterprise service, closed when the test ends.
func NewServer(t testing.TB) *Server {
	s := &Server{}
	s.srv = httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the base URL to pass as ENTERPRISE_API_URL.
func (s *Server) URL() string { return s.srv.URL }

// SecretKey is the secret the fake expects in the Enterprise-Api-Secret-Key header.
func (s *Server) SecretKey() string { return "" }

// SetLicenseStatus sets what /info reports as license.status.
func (s *Server) SetLicenseStatus(status string) {}

// SetAccessMode sets the access mode of an app.
func (s *Server) SetAccessMode(appID, mode string) {}

// AllowUser lets userID access appID.
func (s *Server) AllowUser(userID, appID string) {}

// SetSSOInitiateURL sets the URL sso-initiate answers with.
func (s *Server) SetSSOInitiateURL(url string) {}

// SetDelay delays every answer by d.
func (s *Server) SetDelay(d time.Duration) {}

// FailWith makes every call answer status (e.g. 503); 0 stops failing.
func (s *Server) FailWith(status int) {}

// Request is one call the fake received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// Requests returns the calls received so far, oldest first.
func (s *Server) Requests() []Request { return nil }
