package deviceflow

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecretKey = "sk-test-shared-secret"

var testEpoch = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// signRaw signs arbitrary claims the way a (possibly hostile) peer could.
func signRaw(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func assertionClaims(now time.Time, lifetime time.Duration) jwt.MapClaims {
	return jwt.MapClaims{
		"aud": audExternalSubjectAssertion, "iat": now.Unix(), "exp": now.Add(lifetime).Unix(),
		"email": "Ext.User@partner.example", "issuer": "https://idp.partner.example", "user_code": "BCDF-GHJK", "nonce": "n-1",
	}
}

func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("segment: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("segment json: %v", err)
	}
	return m
}

func TestStateEnvelopeMatchesDifyShape(t *testing.T) {
	keys := newEnvelopeKeys(testSecretKey, fixedClock(testEpoch))
	tok, err := keys.signState("BCDF-GHJK", "nonce-1", "https://api.example/openapi/v1/oauth/device/sso-complete")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	header := decodeSegment(t, parts[0])
	if header["alg"] != "HS256" || header["kid"] != "dify-shared-v1" || header["typ"] != "JWT" {
		t.Errorf("header = %v", header)
	}
	claims := decodeSegment(t, parts[1])
	want := map[string]any{
		"aud": "api.sso.state_envelope", "intent": "device_flow", "user_code": "BCDF-GHJK", "nonce": "nonce-1",
		"idp_callback_url": "https://api.example/openapi/v1/oauth/device/sso-complete",
		"redirect_url":     "", "app_code": "", "return_to": "",
		"iat": float64(testEpoch.Unix()), "exp": float64(testEpoch.Add(900 * time.Second).Unix()),
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %#v, want %#v", k, claims[k], v)
		}
	}
	var back stateEnvelope
	if err := keys.verify(tok, audStateEnvelope, &back); err != nil {
		t.Fatalf("own envelope refused: %v", err)
	}
}

func TestAssertionAccepted(t *testing.T) {
	keys := newEnvelopeKeys(testSecretKey, fixedClock(testEpoch))
	// An array audience (how golang-jwt writes it by default) is as good as Dify's single string.
	claims := assertionClaims(testEpoch, 120*time.Second)
	claims["aud"] = []string{audExternalSubjectAssertion}
	a, err := keys.verifyAssertion(signRaw(t, jwt.SigningMethodHS256, []byte(testSecretKey), envelopeKeyID, claims))
	if err != nil {
		t.Fatalf("valid assertion refused: %v", err)
	}
	if a.Email != "Ext.User@partner.example" || a.Issuer != "https://idp.partner.example" || a.UserCode != "BCDF-GHJK" ||
		a.Nonce != "n-1" || !a.expiry().Equal(testEpoch.Add(120*time.Second)) {
		t.Errorf("claims = %+v", a)
	}
}

func TestAssertionRefusals(t *testing.T) {
	rsaKey := testRSAKey(t)
	secret := []byte(testSecretKey)
	with := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := assertionClaims(testEpoch, 60*time.Second)
		mut(c)
		return c
	}
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, assertionClaims(testEpoch, 60*time.Second)).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"bad signature":     signRaw(t, jwt.SigningMethodHS256, []byte("another-secret"), envelopeKeyID, assertionClaims(testEpoch, 60*time.Second)),
		"alg none":          noneTok,
		"RS256":             signRaw(t, jwt.SigningMethodRS256, rsaKey, envelopeKeyID, assertionClaims(testEpoch, 60*time.Second)),
		"HS512":             signRaw(t, jwt.SigningMethodHS512, secret, envelopeKeyID, assertionClaims(testEpoch, 60*time.Second)),
		"no kid":            signRaw(t, jwt.SigningMethodHS256, secret, "", assertionClaims(testEpoch, 60*time.Second)),
		"other kid":         signRaw(t, jwt.SigningMethodHS256, secret, "dify-shared-v0", assertionClaims(testEpoch, 60*time.Second)),
		"wrong audience":    signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { c["aud"] = audApprovalGrant })),
		"no audience":       signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { delete(c, "aud") })),
		"expired":           signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, assertionClaims(testEpoch.Add(-121*time.Second), 120*time.Second)),
		"lifetime 121 s":    signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, assertionClaims(testEpoch, 121*time.Second)),
		"no iat":            signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { delete(c, "iat") })),
		"no exp":            signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { delete(c, "exp") })),
		"iat in the future": signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, assertionClaims(testEpoch.Add(30*time.Second), 60*time.Second)),
		"not yet valid":     signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { c["nbf"] = testEpoch.Add(30 * time.Second).Unix() })),
		"bad email":         signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { c["email"] = "not an email" })),
		"empty issuer":      signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { c["issuer"] = "" })),
		"no nonce":          signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { delete(c, "nonce") })),
		"email not string":  signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, with(func(c jwt.MapClaims) { c["email"] = 42 })),
		"garbage":           "not.a.jws",
		"empty":             "",
		"oversized":         strings.Repeat("a", maxEnvelopeLen+1),
	}
	keys := newEnvelopeKeys(testSecretKey, fixedClock(testEpoch))
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := keys.verifyAssertion(tok); !errors.Is(err, errInvalidEnvelope) {
				t.Fatalf("err = %v, want errInvalidEnvelope", err)
			}
		})
	}
}

func TestApprovalGrantRoundTrip(t *testing.T) {
	keys := newEnvelopeKeys(testSecretKey, fixedClock(testEpoch))
	tok, minted, err := keys.signGrant("https://api.example", "ext@partner.example", "https://idp.example", "BCDF-GHJK")
	if err != nil {
		t.Fatal(err)
	}
	claims := decodeSegment(t, strings.Split(tok, ".")[1])
	if claims["aud"] != audApprovalGrant || claims["iss"] != "https://api.example" ||
		claims["exp"] != float64(testEpoch.Add(300*time.Second).Unix()) {
		t.Errorf("claims = %v", claims)
	}
	got, err := keys.verifyGrant(tok)
	if err != nil {
		t.Fatalf("own grant refused: %v", err)
	}
	if got.SubjectEmail != "ext@partner.example" || got.SubjectIssuer != "https://idp.example" || got.UserCode != "BCDF-GHJK" ||
		got.Nonce != minted.Nonce || got.CSRFToken != minted.CSRFToken || len(got.CSRFToken) != 22 || got.Nonce == got.CSRFToken {
		t.Errorf("grant = %+v, minted %+v", got, minted)
	}
	// A grant is not an assertion, and expires after 5 minutes.
	if _, err := keys.verifyAssertion(tok); !errors.Is(err, errInvalidEnvelope) {
		t.Errorf("grant accepted as assertion: %v", err)
	}
	later := newEnvelopeKeys(testSecretKey, fixedClock(testEpoch.Add(301*time.Second)))
	if _, err := later.verifyGrant(tok); !errors.Is(err, errInvalidEnvelope) {
		t.Errorf("expired grant accepted: %v", err)
	}
}

// FuzzEnvelopeParsing: whatever arrives in a query parameter or cookie, parsing ends in a value or errInvalidEnvelope.
func FuzzEnvelopeParsing(f *testing.F) {
	keys := newEnvelopeKeys(testSecretKey, fixedClock(testEpoch))
	grant, _, err := keys.signGrant("https://api.example", "ext@partner.example", "https://idp.example", "BCDF-GHJK")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(grant)
	f.Add(signRaw(f, jwt.SigningMethodHS256, []byte(testSecretKey), envelopeKeyID, assertionClaims(testEpoch, 60*time.Second)))
	f.Add("eyJhbGciOiJub25lIn0.eyJhdWQiOjF9.")
	f.Add("eyJhbGciOiJIUzI1NiIsImtpZCI6WzFdfQ.e30.AAAA")
	f.Add("..")
	f.Add("a.b.c.d")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := keys.verifyAssertion(token); err != nil && !errors.Is(err, errInvalidEnvelope) {
			t.Fatalf("assertion: unexpected error type %v", err)
		}
		if _, err := keys.verifyGrant(token); err != nil && !errors.Is(err, errInvalidEnvelope) {
			t.Fatalf("grant: unexpected error type %v", err)
		}
	})
}
