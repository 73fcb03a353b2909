// Package assertion signs the identity of an allowed request as a short-lived JWT (ES256) that the upstream, or its sidecar,
// verifies with the public keys extauthz publishes as a JWKS (RFC 7517). The x-authgate-* headers are only as trustworthy as
// the network path to the upstream; the assertion holds wherever the request came from (docs/security.md).
package assertion

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/authgate/authgate/internal/pipeline"
)

const (
	// Header carries the assertion to the upstream; like every x-authgate-* header, a client's is removed.
	Header = pipeline.IdentityHeaderPrefix + "assertion"
	// Issuer is the assertion's iss: a verifier's request principal is "authgate/<sub>".
	Issuer = "authgate"
	// JWKSPath is where extauthz's admin listener serves the public keys.
	JWKSPath = "/.well-known/jwks.json"
)

// cacheEntries bounds the signed assertions kept: one per identity (token, tenant, app) seen within half a lifetime.
const cacheEntries = 100_000

// Claims are the assertion's claims: the identity headers of the allow, named as in the JWT registry where one exists
// (sub, scope as in RFC 8693 §4.2, client_id as in RFC 9068 §2.2).
type Claims struct {
	jwt.RegisteredClaims
	SubjectType   string `json:"subject_type"`
	Email         string `json:"email,omitempty"`
	SubjectIssuer string `json:"subject_issuer,omitempty"`
	AccountID     string `json:"account_id,omitempty"`
	TenantID      string `json:"tenant_id,omitempty"`
	AppID         string `json:"app_id,omitempty"`
	Scope         string `json:"scope,omitempty"`
	ClientID      string `json:"client_id,omitempty"`
	TokenID       string `json:"token_id,omitempty"`
}

// Options configure a Signer.
type Options struct {
	Key *ecdsa.PrivateKey // P-256; signs every assertion
	// Previous are keys retired from signing whose public halves stay in the JWKS, so that assertions signed before a
	// rotation verify until they expire.
	Previous []*ecdsa.PublicKey
	Audience string        // aud
	Lifetime time.Duration // exp - iat
	Now      func() time.Time
}

// Signer signs assertions and caches them per identity: an identity's assertion is reused until half its lifetime is gone,
// so a Check signs only for an identity it has not seen lately.
type Signer struct {
	key      *ecdsa.PrivateKey
	kid      string
	audience jwt.ClaimStrings
	lifetime time.Duration
	now      func() time.Time
	cache    *expirable.LRU[string, signed]
	jwks     []byte
}

type signed struct {
	token  string
	issued time.Time
}

// New checks the keys and builds the JWKS once.
func New(o Options) (*Signer, error) {
	if o.Key == nil {
		return nil, errors.New("no signing key")
	}
	if o.Audience == "" {
		return nil, errors.New("no audience")
	}
	if o.Lifetime <= 0 {
		return nil, errors.New("lifetime must be positive")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	keys := []JWK{}
	for _, pub := range append([]*ecdsa.PublicKey{&o.Key.PublicKey}, o.Previous...) {
		jwk, err := NewJWK(pub)
		if err != nil {
			return nil, err
		}
		keys = append(keys, jwk)
	}
	jwks, err := json.Marshal(JWKS{Keys: keys})
	if err != nil {
		return nil, err
	}
	return &Signer{key: o.Key, kid: keys[0].Kid, audience: jwt.ClaimStrings{o.Audience}, lifetime: o.Lifetime, now: o.Now,
		// The cache's own expiry only bounds memory; Assert decides freshness on its clock.
		cache: expirable.NewLRU[string, signed](cacheEntries, nil, o.Lifetime/2), jwks: jwks}, nil
}

// KeyID is the signing key's kid, its RFC 7638 thumbprint.
func (s *Signer) KeyID() string { return s.kid }

// Assert returns the assertion for an allow's identity headers; "" when they name no subject (routes without a bearer).
func (s *Signer) Assert(headers []pipeline.Header) (string, error) {
	key, ok := cacheKey(headers)
	if !ok {
		return "", nil
	}
	now := s.now()
	if e, ok := s.cache.Get(key); ok && now.Sub(e.issued) < s.lifetime/2 && !now.Before(e.issued) {
		return e.token, nil
	}
	token, err := s.sign(headers, now)
	if err != nil {
		return "", err
	}
	s.cache.Add(key, signed{token: token, issued: now})
	return token, nil
}

// cacheKey is the identity the headers describe: every identity header, in the order the pipeline sets them.
func cacheKey(headers []pipeline.Header) (string, bool) {
	n := 0
	for _, h := range headers {
		n += len(h.Name) + len(h.Value) + 2
	}
	var b strings.Builder
	b.Grow(n)
	subject := false
	for _, h := range headers {
		if !strings.HasPrefix(h.Name, pipeline.IdentityHeaderPrefix) {
			continue
		}
		subject = subject || h.Name == pipeline.HeaderSubjectType && h.Value != ""
		b.WriteString(h.Name)
		b.WriteByte(0)
		b.WriteString(h.Value)
		b.WriteByte(0)
	}
	return b.String(), subject
}

func (s *Signer) sign(headers []pipeline.Header, now time.Time) (string, error) {
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: Issuer, Audience: s.audience,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(s.lifetime))}}
	for _, h := range headers {
		switch h.Name {
		case pipeline.HeaderSubjectType:
			c.SubjectType = h.Value
		case pipeline.HeaderSubjectEmail:
			c.Email = h.Value
		case pipeline.HeaderSubjectIssuer:
			c.SubjectIssuer = h.Value
		case pipeline.HeaderAccountID:
			c.AccountID = h.Value
		case pipeline.HeaderTokenID:
			c.TokenID = h.Value
		case pipeline.HeaderClientID:
			c.ClientID = h.Value
		case pipeline.HeaderScopes:
			c.Scope = h.Value
		case pipeline.HeaderTenantID:
			c.TenantID = h.Value
		case pipeline.HeaderAppID:
			c.AppID = h.Value
		}
	}
	// An account is its id; an external SSO subject has none and is its email, unique within its issuer.
	c.Subject = c.AccountID
	if c.Subject == "" {
		c.Subject = c.Email
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = s.kid
	return t.SignedString(s.key)
}

// JWKS is a JSON Web Key Set (RFC 7517 §5).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is an EC public key (RFC 7518 §6.2.1).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// NewJWK describes a P-256 public key, its kid the RFC 7638 thumbprint.
func NewJWK(pub *ecdsa.PublicKey) (JWK, error) {
	if pub.Curve != elliptic.P256() {
		return JWK{}, fmt.Errorf("key is on %s, want P-256 (ES256)", pub.Curve.Params().Name)
	}
	raw, err := pub.Bytes() // uncompressed point: 0x04 || X || Y, each 32 bytes
	if err != nil {
		return JWK{}, err
	}
	enc := base64.RawURLEncoding.EncodeToString
	x, y := enc(raw[1:33]), enc(raw[33:])
	// RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return JWK{Kty: "EC", Crv: "P-256", X: x, Y: y, Kid: enc(sum[:]), Use: "sig", Alg: "ES256"}, nil
}

// PublicKey is the key a JWK describes.
func (k JWK) PublicKey() (*ecdsa.PublicKey, error) {
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, fmt.Errorf("key %s: kty %q crv %q, want EC P-256", k.Kid, k.Kty, k.Crv)
	}
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, fmt.Errorf("key %s: malformed coordinates", k.Kid)
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
}

// ServeHTTP serves the JWKS. Verifiers cache it; a short max-age lets them see a rotation soon.
func (s *Signer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.jwks)
}

// LoadPrivateKey reads a PEM P-256 private key (SEC 1 "EC PRIVATE KEY" or PKCS #8 "PRIVATE KEY").
func LoadPrivateKey(path string) (*ecdsa.PrivateKey, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := jwt.ParseECPrivateKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PEM EC private key: %w", path, err)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: key is on %s, want P-256 (ES256)", path, key.Curve.Params().Name)
	}
	return key, nil
}

// LoadPublicKey reads the public half of a retired key from a PEM private key (the old key file as it was) or public key.
func LoadPublicKey(path string) (*ecdsa.PublicKey, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if key, err := jwt.ParseECPrivateKeyFromPEM(pem); err == nil {
		return &key.PublicKey, checkP256(path, &key.PublicKey)
	}
	pub, err := jwt.ParseECPublicKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PEM EC private or public key: %w", path, err)
	}
	return pub, checkP256(path, pub)
}

func checkP256(path string, pub *ecdsa.PublicKey) error {
	if pub.Curve != elliptic.P256() {
		return fmt.Errorf("%s: key is on %s, want P-256 (ES256)", path, pub.Curve.Params().Name)
	}
	return nil
}
