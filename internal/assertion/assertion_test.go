package assertion_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authgate/authgate/internal/assertion"
	"github.com/authgate/authgate/internal/pipeline"
)

const audience = "dify-api"

// clock is a settable time for the signer and the verifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

// keyFile writes a new P-256 key as PEM (SEC 1) and returns its path and key.
func keyFile(t testing.TB, curve elliptic.Curve) (string, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func newSigner(t testing.TB, c *clock, previous ...*ecdsa.PublicKey) *assertion.Signer {
	t.Helper()
	path, _ := keyFile(t, elliptic.P256())
	key, err := assertion.LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := assertion.New(assertion.Options{Key: key, Previous: previous, Audience: audience, Lifetime: 5 * time.Minute, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// identity is an allow's headers, as the pipeline sets them.
func identity(tenant string) []pipeline.Header {
	return []pipeline.Header{
		{Name: pipeline.HeaderSubjectType, Value: "account"},
		{Name: pipeline.HeaderSubjectEmail, Value: "ada@example.com"},
		{Name: pipeline.HeaderSubjectIssuer, Value: "dify:account"},
		{Name: pipeline.HeaderAccountID, Value: "6f1c0b7e-0000-4000-8000-000000000001"},
		{Name: pipeline.HeaderTokenID, Value: "0b9e4c1a-0000-4000-8000-000000000002"},
		{Name: pipeline.HeaderClientID, Value: "difyctl"},
		{Name: pipeline.HeaderScopes, Value: "full"},
		{Name: pipeline.HeaderTenantID, Value: tenant},
		{Name: pipeline.HeaderAppID, Value: "a0a0a0a0-0000-4000-8000-000000000004"},
	}
}

// upstream verifies assertions as a service behind the proxy would: it fetches the JWKS over HTTP and checks the signature
// with the key the kid names, the issuer, the audience and the expiry, on its own clock.
type upstream struct {
	keys map[string]*ecdsa.PublicKey
	now  func() time.Time
}

func newUpstream(t *testing.T, jwksHandler http.Handler, now func() time.Time) *upstream {
	t.Helper()
	srv := httptest.NewServer(jwksHandler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + assertion.JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/jwk-set+json" {
		t.Errorf("JWKS content type %q", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	var set assertion.JWKS
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&set); err != nil {
		t.Fatalf("JWKS %s: %v", body, err)
	}
	u := &upstream{keys: map[string]*ecdsa.PublicKey{}, now: now}
	for _, k := range set.Keys {
		if k.Use != "sig" || k.Alg != "ES256" {
			t.Errorf("key %s: use %q alg %q", k.Kid, k.Use, k.Alg)
		}
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		u.keys[k.Kid] = pub
	}
	return u
}

func (u *upstream) verify(token, aud string) (*assertion.Claims, error) {
	var c assertion.Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if k, ok := u.keys[kid]; ok {
			return k, nil
		}
		return nil, errors.New("unknown kid")
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(aud), jwt.WithIssuer(assertion.Issuer),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(u.now))
	return &c, err
}

func TestAssertionVerifiesWithTheJWKS(t *testing.T) {
	c := newClock()
	s := newSigner(t, c)
	token, err := s.Assert(identity("t-1"))
	if err != nil || token == "" {
		t.Fatalf("Assert = %q, %v", token, err)
	}
	claims, err := newUpstream(t, s, c.Now).verify(token, audience)
	if err != nil {
		t.Fatal(err)
	}
	want := assertion.Claims{SubjectType: "account", Email: "ada@example.com", SubjectIssuer: "dify:account",
		AccountID: "6f1c0b7e-0000-4000-8000-000000000001", TenantID: "t-1", AppID: "a0a0a0a0-0000-4000-8000-000000000004",
		Scope: "full", ClientID: "difyctl", TokenID: "0b9e4c1a-0000-4000-8000-000000000002"}
	got := *claims
	got.RegisteredClaims = jwt.RegisteredClaims{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims = %+v, want %+v", got, want)
	}
	if claims.Subject != want.AccountID || claims.Issuer != assertion.Issuer {
		t.Errorf("sub %q iss %q", claims.Subject, claims.Issuer)
	}
	if exp := claims.ExpiresAt.Sub(claims.IssuedAt.Time); exp != 5*time.Minute {
		t.Errorf("lifetime %v, want 5m", exp)
	}
	parsed, _, _ := jwt.NewParser().ParseUnverified(token, &assertion.Claims{})
	if parsed.Header["kid"] != s.KeyID() || parsed.Header["alg"] != "ES256" {
		t.Errorf("header %v", parsed.Header)
	}
}

func TestAssertionOfAnExternalSubjectIsItsEmail(t *testing.T) {
	c := newClock()
	s := newSigner(t, c)
	token, err := s.Assert([]pipeline.Header{{Name: pipeline.HeaderSubjectType, Value: "external_sso"},
		{Name: pipeline.HeaderSubjectEmail, Value: "sam@partner.example"}, {Name: pipeline.HeaderSubjectIssuer, Value: "https://idp.example"},
		{Name: pipeline.HeaderTokenID, Value: "tok"}, {Name: pipeline.HeaderScopes, Value: "apps:run"}})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := newUpstream(t, s, c.Now).verify(token, audience)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "sam@partner.example" || claims.AccountID != "" || claims.SubjectIssuer != "https://idp.example" {
		t.Errorf("claims %+v", claims)
	}
}

func TestAssertionIsRefusedTamperedExpiredOrForAnotherAudience(t *testing.T) {
	c := newClock()
	s := newSigner(t, c)
	up := newUpstream(t, s, c.Now)
	token, err := s.Assert(identity("t-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.verify(token, audience); err != nil {
		t.Fatalf("the untouched assertion: %v", err)
	}

	parts := strings.Split(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(payload), "6f1c0b7e-0000-4000-8000-000000000001", "99999999-0000-4000-8000-000000000009", 1)
	if forged == string(payload) {
		t.Fatal("the account id is not in the payload")
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
	if _, err := up.verify(tampered, audience); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("tampered payload: err = %v, want an invalid signature", err)
	}
	if _, err := up.verify(token, "another-service"); !errors.Is(err, jwt.ErrTokenInvalidAudience) {
		t.Errorf("another audience: err = %v, want an invalid audience", err)
	}
	// Signed by a key not in the JWKS, even with the published kid.
	other := newSigner(t, c)
	foreign, _ := other.Assert(identity("t-1"))
	if _, err := up.verify(foreign, audience); err == nil {
		t.Error("an assertion signed by a key outside the JWKS verified")
	}

	c.Advance(5*time.Minute + time.Second)
	if _, err := up.verify(token, audience); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("after its lifetime: err = %v, want expired", err)
	}
}

func TestAssertionsSignedBeforeARotationVerifyUntilTheyExpire(t *testing.T) {
	c := newClock()
	oldPath, _ := keyFile(t, elliptic.P256())
	oldKey, err := assertion.LoadPrivateKey(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	before, err := assertion.New(assertion.Options{Key: oldKey, Audience: audience, Lifetime: 5 * time.Minute, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	oldToken, _ := before.Assert(identity("t-1"))

	// The rotation: a new key signs, the old key file becomes IDENTITY_ASSERTION_PREVIOUS_KEY_FILE.
	previous, err := assertion.LoadPublicKey(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute)
	after := newSigner(t, c, previous)
	if after.KeyID() == before.KeyID() {
		t.Fatal("the new key has the old kid")
	}
	up := newUpstream(t, after, c.Now)
	if len(up.keys) != 2 {
		t.Fatalf("JWKS has %d keys, want the new and the previous", len(up.keys))
	}
	if _, err := up.verify(oldToken, audience); err != nil {
		t.Errorf("an assertion signed with the previous key: %v", err)
	}
	newToken, _ := after.Assert(identity("t-1"))
	parsed, _, _ := jwt.NewParser().ParseUnverified(newToken, &assertion.Claims{})
	if parsed.Header["kid"] != after.KeyID() {
		t.Errorf("new assertions are signed with kid %v, want %s", parsed.Header["kid"], after.KeyID())
	}
	if _, err := up.verify(newToken, audience); err != nil {
		t.Error(err)
	}
	c.Advance(4*time.Minute + time.Second)
	if _, err := up.verify(oldToken, audience); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("the old assertion after its lifetime: %v, want expired", err)
	}

	// A previous key given as its public key only is published the same.
	pubDER, _ := x509.MarshalPKIXPublicKey(previous)
	pubPath := filepath.Join(t.TempDir(), "previous.pub.pem")
	_ = os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)
	fromPublic, err := assertion.LoadPublicKey(pubPath)
	if err != nil || !fromPublic.Equal(previous) {
		t.Errorf("previous key from a public PEM: %v", err)
	}
}

func TestAssertionIsCachedPerIdentity(t *testing.T) {
	c := newClock()
	s := newSigner(t, c)
	first, _ := s.Assert(identity("t-1"))
	c.Advance(time.Second) // a re-sign would show in iat
	again, _ := s.Assert(identity("t-1"))
	if again != first {
		t.Error("two allows of the same identity got different assertions: it was signed again")
	}
	otherTenant, _ := s.Assert(identity("t-2"))
	if otherTenant == first {
		t.Error("another workspace got the same assertion")
	}
	up := newUpstream(t, s, c.Now)
	if claims, err := up.verify(otherTenant, audience); err != nil || claims.TenantID != "t-2" {
		t.Errorf("the other workspace's assertion: %+v, %v", claims, err)
	}

	// Re-signed once less than half its lifetime is left.
	c.Advance(2*time.Minute + 28*time.Second)
	if still, _ := s.Assert(identity("t-1")); still != first {
		t.Error("re-signed with more than half its lifetime left")
	}
	c.Advance(time.Second)
	fresh, _ := s.Assert(identity("t-1"))
	if fresh == first {
		t.Fatal("not re-signed with half its lifetime gone")
	}
	claims, err := up.verify(fresh, audience)
	if err != nil || !claims.IssuedAt.Equal(c.Now()) {
		t.Errorf("the fresh assertion: %+v, %v", claims, err)
	}
}

func TestNoAssertionWithoutASubject(t *testing.T) {
	s := newSigner(t, newClock())
	for _, hs := range [][]pipeline.Header{nil, {{Name: "authorization", Value: "Bearer x"}}} {
		if token, err := s.Assert(hs); token != "" || err != nil {
			t.Errorf("Assert(%v) = %q, %v; want nothing", hs, token, err)
		}
	}
}

func TestBadKeysAreRefused(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	_ = os.WriteFile(garbage, []byte("not a key"), 0o600)
	p384, _ := keyFile(t, elliptic.P384())
	rsaLike := filepath.Join(dir, "cert.pem")
	_ = os.WriteFile(rsaLike, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), 0o600)
	for _, path := range []string{filepath.Join(dir, "missing.pem"), garbage, p384, rsaLike} {
		if _, err := assertion.LoadPrivateKey(path); err == nil {
			t.Errorf("LoadPrivateKey(%s) accepted it", filepath.Base(path))
		}
		if _, err := assertion.LoadPublicKey(path); err == nil {
			t.Errorf("LoadPublicKey(%s) accepted it", filepath.Base(path))
		}
	}
	_, p256 := keyFile(t, elliptic.P256())
	for name, o := range map[string]assertion.Options{
		"no key":      {Audience: audience, Lifetime: time.Minute},
		"no audience": {Key: p256, Lifetime: time.Minute},
		"no lifetime": {Key: p256, Audience: audience},
	} {
		if _, err := assertion.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkAssertionCached is a warm Check's cost: the identity's assertion is in the cache.
func BenchmarkAssertionCached(b *testing.B) {
	path, _ := keyFile(b, elliptic.P256())
	key, _ := assertion.LoadPrivateKey(path)
	s, err := assertion.New(assertion.Options{Key: key, Audience: audience, Lifetime: 5 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	hs := identity("t-1")
	if _, err := s.Assert(hs); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Assert(hs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAssertionSign is what a cache miss costs: one ES256 signature.
func BenchmarkAssertionSign(b *testing.B) {
	path, _ := keyFile(b, elliptic.P256())
	key, _ := assertion.LoadPrivateKey(path)
	s, _ := assertion.New(assertion.Options{Key: key, Audience: audience, Lifetime: 5 * time.Minute})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := s.Assert(identity(string(rune('a'+i%26)) + time.Duration(i).String())); err != nil {
			b.Fatal(err)
		}
	}
}
