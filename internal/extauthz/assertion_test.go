package extauthz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/assertion"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/pipeline"
)

func assertingServer(t *testing.T, d pipeline.Decision) *Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(key)
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := newAssertionSigner(config.IdentityAssertion{Enabled: true, KeyFile: path, Audience: "dify-api", Lifetime: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(fixedChecker(d), slog.New(slog.DiscardHandler), 0)
	s.assertion = signer
	return s
}

func headerValue(hs []pipeline.Header, name string) (string, bool) {
	for _, h := range hs {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

// TestAssertionHeaderIsSetNotRemoved: the pipeline lists a client's x-authgate-assertion in headers_to_remove, which Envoy
// applies after the headers it sets; an allow that sets the assertion must take it off that list, or the upstream gets none.
func TestAssertionHeaderIsSetNotRemoved(t *testing.T) {
	allow := pipeline.Decision{Allow: true, SetHeaders: []pipeline.Header{{Name: pipeline.HeaderSubjectType, Value: "account"},
		{Name: pipeline.HeaderAccountID, Value: "acc"}, {Name: pipeline.HeaderTenantID, Value: "t-1"}},
		RemoveHeaders: []string{pipeline.HeaderAppID, assertion.Header, "x_authgate_assertion"}}
	s := assertingServer(t, allow)
	ok := s.roundTrip(t, envoyRequest("GET", "/openapi/v1/me", map[string]string{assertion.Header: "forged"}, "10.0.0.1")).GetOkResponse()
	var token string
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == assertion.Header {
			token = h.GetHeader().GetValue()
		}
	}
	if token == "" || token == "forged" {
		t.Fatalf("assertion %q, want a signed one", token)
	}
	removed := ok.GetHeadersToRemove()
	if slices.Contains(removed, assertion.Header) || !slices.Contains(removed, "x_authgate_assertion") || !slices.Contains(removed, pipeline.HeaderAppID) {
		t.Errorf("headers_to_remove %v: want the others kept and the assertion it sets gone", removed)
	}
	// The Decision the checker returned is not changed under it (the pipeline may share its slices).
	if _, set := headerValue(allow.SetHeaders, assertion.Header); set || !slices.Contains(allow.RemoveHeaders, assertion.Header) {
		t.Error("addAssertion modified the checker's Decision")
	}

	// Another workspace is another identity, another assertion; the same one is the cached assertion.
	other := allow
	other.SetHeaders = slices.Clone(allow.SetHeaders)
	other.SetHeaders[2].Value = "t-2"
	d1, d2, d3 := s.addAssertion(allow), s.addAssertion(allow), s.addAssertion(other)
	a1, _ := headerValue(d1.SetHeaders, assertion.Header)
	a2, _ := headerValue(d2.SetHeaders, assertion.Header)
	a3, _ := headerValue(d3.SetHeaders, assertion.Header)
	if a1 != a2 || a1 == a3 || a3 == "" {
		t.Errorf("same identity: equal=%v; other workspace: equal=%v", a1 == a2, a1 == a3)
	}
}

func TestNoAssertionOnDenyOrWithoutSubject(t *testing.T) {
	deny := assertingServer(t, pipeline.Decision{Status: 401, Code: pipeline.CodeInvalidBearer})
	if resp := deny.roundTrip(t, envoyRequest("GET", "/openapi/v1/me", nil, "10.0.0.1")); resp.GetDeniedResponse() == nil {
		t.Fatalf("deny became %v", resp)
	}
	anon := assertingServer(t, pipeline.Decision{Allow: true, Route: "health"})
	ok := anon.roundTrip(t, envoyRequest("GET", "/openapi/v1/_health", nil, "10.0.0.1")).GetOkResponse()
	if len(ok.GetHeaders()) != 0 || !slices.Contains(ok.GetHeadersToRemove(), assertion.Header) {
		t.Errorf("auth: none allow: headers %v, removed %v; want no assertion and any removed", ok.GetHeaders(), ok.GetHeadersToRemove())
	}
}

func TestJWKSBesideTheAdminEndpoints(t *testing.T) {
	s := assertingServer(t, pipeline.Decision{})
	admin := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := withJWKS(admin, s.assertion)
	for path, want := range map[string]int{assertion.JWKSPath: http.StatusOK, "/readyz": http.StatusTeapot} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}
	if withJWKS(admin, nil) == nil {
		t.Error("no admin handler with the assertion off")
	}
	rec := httptest.NewRecorder()
	withJWKS(admin, nil).ServeHTTP(rec, httptest.NewRequest("GET", assertion.JWKSPath, nil))
	if rec.Code != http.StatusTeapot {
		t.Errorf("assertion off: the JWKS path answered %d, want the admin handler's", rec.Code)
	}
}
