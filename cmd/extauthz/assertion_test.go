package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/authgate/authgate/internal/assertion"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/telemetry"
)

func writeECKey(t *testing.T, curve elliptic.Curve) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "assertion-key.pem")
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	return path
}

// okHeaders is an allow's headers to set and to remove.
func okHeaders(t *testing.T, resp *authv3.CheckResponse) (map[string]string, []string) {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("want allow, got %v", resp)
	}
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return set, ok.GetHeadersToRemove()
}

// jwksKeys fetches the JWKS from the admin listener as a verifier (istiod, the upstream) does.
func jwksKeys(t *testing.T, adminAddr string) map[string]*ecdsa.PublicKey {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + assertion.JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set assertion.JWKS
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("JWKS: %d, %v", resp.StatusCode, err)
	}
	keys := map[string]*ecdsa.PublicKey{}
	for _, k := range set.Keys {
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[k.Kid] = pub
	}
	return keys
}

// TestAllowedChecksCarryAVerifiableAssertion: with IDENTITY_ASSERTION=true an allow sets x-authgate-assertion, which verifies
// with the JWKS on the admin listener and names the same identity as the headers; a forged one from the client never survives.
func TestAllowedChecksCarryAVerifiableAssertion(t *testing.T) {
	w := newWorld(t)
	srv := w.start(map[string]string{"IDENTITY_ASSERTION": "true", "IDENTITY_ASSERTION_KEY_FILE": writeECKey(t, elliptic.P256()),
		"IDENTITY_ASSERTION_AUDIENCE": "dify-api"})
	plain, id := w.accountToken(accountActive, "ada@example.com")
	forged := map[string]string{"authorization": "Bearer " + plain, assertion.Header: "forged"}

	set, removed := okHeaders(t, srv.check(t, "GET", "/openapi/v1/me", forged))
	token := set[assertion.Header]
	if token == "" || token == "forged" || slices.Contains(removed, assertion.Header) {
		t.Fatalf("assertion %q, removed %v: want a signed one, set and not removed", token, removed)
	}
	keys := jwksKeys(t, srv.app.AdminAddr())
	var claims assertion.Claims
	_, err := jwt.ParseWithClaims(token, &claims, func(tok *jwt.Token) (any, error) {
		if k := keys[tok.Header["kid"].(string)]; k != nil {
			return k, nil
		}
		return nil, errors.New("unknown kid")
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience("dify-api"), jwt.WithIssuer(assertion.Issuer), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("the assertion does not verify with the JWKS: %v", err)
	}
	if claims.Subject != accountActive || claims.AccountID != accountActive || claims.TokenID != id || claims.Email != "ada@example.com" ||
		claims.Scope != "full" || claims.ClientID != "difyctl" || claims.SubjectType != "account" {
		t.Errorf("claims %+v do not match the identity headers %v", claims, set)
	}

	again, _ := okHeaders(t, srv.check(t, "GET", "/openapi/v1/me", bearer(plain)))
	if again[assertion.Header] != token {
		t.Error("the same identity was signed again instead of served from the cache")
	}

	// A route without a bearer has no identity to assert: the client's assertion is removed, none is set.
	set, removed = okHeaders(t, srv.check(t, "GET", "/openapi/v1/_health", map[string]string{assertion.Header: "forged"}))
	if _, ok := set[assertion.Header]; ok || !slices.Contains(removed, assertion.Header) {
		t.Errorf("auth: none route: set %v, removed %v; want the assertion removed", set, removed)
	}

	resp, err := http.Get("http://" + srv.app.AdminAddr() + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz next to the JWKS: %v, %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	w.assertNoTokenLogged(t)
}

// TestAssertionStartErrorsNameTheVariable: a key extauthz cannot sign with stops start-up with one line naming the variable.
func TestAssertionStartErrorsNameTheVariable(t *testing.T) {
	w := newWorld(t)
	tel, err := telemetry.Setup(context.Background(), "extauthz-test", telemetry.Config{LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN EC PRIVATE KEY-----\nnope\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := writeECKey(t, elliptic.P256())
	for name, c := range map[string]struct {
		vars    map[string]string
		wantVar string
	}{
		"missing key file": {map[string]string{"IDENTITY_ASSERTION_KEY_FILE": filepath.Join(t.TempDir(), "absent.pem")}, "IDENTITY_ASSERTION_KEY_FILE"},
		"not a key":        {map[string]string{"IDENTITY_ASSERTION_KEY_FILE": garbage}, "IDENTITY_ASSERTION_KEY_FILE"},
		"P-384 key":        {map[string]string{"IDENTITY_ASSERTION_KEY_FILE": writeECKey(t, elliptic.P384())}, "IDENTITY_ASSERTION_KEY_FILE"},
		"bad previous key": {map[string]string{"IDENTITY_ASSERTION_KEY_FILE": good, "IDENTITY_ASSERTION_PREVIOUS_KEY_FILE": garbage}, "IDENTITY_ASSERTION_PREVIOUS_KEY_FILE"},
	} {
		c.vars["IDENTITY_ASSERTION"] = "true"
		app, err := Start(context.Background(), w.config(c.vars), tel)
		if app != nil {
			_ = app.Shutdown(context.Background())
		}
		var cerr *config.Error
		if !errors.As(err, &cerr) || cerr.Var != c.wantVar || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: start error %v, want one line naming %s", name, err, c.wantVar)
		}
	}
}
