package deviceflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authgate/authgate/internal/tokens"
)

// The SSO branch exchanges three compact JWS (HS256, key SECRET_KEY) with Dify's enterprise service and the browser. Their
// audiences keep one purpose's token from being replayed as another's; names and claims follow Dify's api/libs/jws.py so that
// both sides verify each other.
const (
	envelopeKeyID = "dify-shared-v1"

	audStateEnvelope            = "api.sso.state_envelope"
	audExternalSubjectAssertion = "api.device_flow.external_subject_assertion"
	audApprovalGrant            = "api.device_flow.approval_grant"
	// audSSOStartState is authgate's own: the /device page's cookie that lets it, and only it, start SSO.
	audSSOStartState = "api.device_flow.sso_start_state"

	stateEnvelopeTTL     = 900 * time.Second
	approvalGrantTTL     = 300 * time.Second
	maxAssertionLifetime = 120 * time.Second
	ssoStartStateTTL     = 30 * time.Minute
	// iatSkew tolerates the enterprise service's clock running slightly ahead of ours.
	iatSkew = 5 * time.Second
	// maxEnvelopeLen bounds what we hand to the JWS parser; real envelopes are well under 2 KiB.
	maxEnvelopeLen = 8 << 10
)

// errInvalidEnvelope is every reason a JWS is refused; the wrapped detail is for logs only.
var errInvalidEnvelope = errors.New("invalid signed envelope")

// audience is the aud claim: Dify writes one string, other signers may write an array; we accept both and write a string.
type audience jwt.ClaimStrings

func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

func (a *audience) UnmarshalJSON(b []byte) error {
	var cs jwt.ClaimStrings
	if err := cs.UnmarshalJSON(b); err != nil {
		return err
	}
	*a = audience(cs)
	return nil
}

// envelopeTimes are the registered claims every envelope carries.
type envelopeTimes struct {
	Audience  audience         `json:"aud"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`
	ExpiresAt *jwt.NumericDate `json:"exp,omitempty"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	Issuer    string           `json:"iss,omitempty"`
}

func (c envelopeTimes) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }
func (c envelopeTimes) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c envelopeTimes) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore, nil }
func (c envelopeTimes) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c envelopeTimes) GetSubject() (string, error)                  { return "", nil }
func (c envelopeTimes) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings(c.Audience), nil
}

func (c *envelopeTimes) stamp(aud string, now time.Time, ttl time.Duration) {
	c.Audience = audience{aud}
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
}

// expiry is the exp claim; verified envelopes always have one.
func (c envelopeTimes) expiry() time.Time { return c.ExpiresAt.Time }

// stateEnvelope is what sso-initiate hands the enterprise service; it comes back to the IdP callback. The empty fields are
// part of Dify's SSOState shape, which the enterprise service decodes strictly.
type stateEnvelope struct {
	envelopeTimes
	RedirectURL    string `json:"redirect_url"`
	AppCode        string `json:"app_code"`
	Intent         string `json:"intent"`
	UserCode       string `json:"user_code"`
	Nonce          string `json:"nonce"`
	ReturnTo       string `json:"return_to"`
	IDPCallbackURL string `json:"idp_callback_url"`
}

// externalSubjectAssertion is what the enterprise service sends back through the browser after the IdP vouched for the user.
type externalSubjectAssertion struct {
	envelopeTimes
	Email    string `json:"email"`
	Issuer   string `json:"issuer"`
	UserCode string `json:"user_code"`
	Nonce    string `json:"nonce"`
}

// approvalGrant is the device_approval_grant cookie: the verified external subject, bound to one user code, for 5 minutes.
type approvalGrant struct {
	envelopeTimes
	SubjectEmail  string `json:"subject_email"`
	SubjectIssuer string `json:"subject_issuer"`
	UserCode      string `json:"user_code"`
	Nonce         string `json:"nonce"`
	CSRFToken     string `json:"csrf_token"`
}

// ssoStartState is the device_sso_state cookie the /device page sets: its nonce is also in the page, and sso-initiate
// requires both, so only a page the person has open (not a link, nor a form on another site) can start SSO.
type ssoStartState struct {
	envelopeTimes
	Nonce string `json:"nonce"`
}

func checkLen(name, v string, lo, hi int) error {
	if len(v) < lo || len(v) > hi {
		return fmt.Errorf("claim %s: length %d outside %d..%d", name, len(v), lo, hi)
	}
	return nil
}

// checkEmail holds an external subject's email to Dify's own email validator (tokens.ValidEmail), not to the looser shape
// Dify's claim models check (^[^@\s]+@[^@\s]+$, which in Go's RE2, whose \s is ASCII-only, would let NUL, VT, U+0085 and
// U+2028 through): the email is stored and sent upstream in a header.
func checkEmail(name, v string) error {
	if err := checkLen(name, v, 3, tokens.MaxEmailLen); err != nil {
		return err
	}
	if !tokens.ValidEmail(v) {
		return fmt.Errorf("claim %s: not an email Dify accepts", name)
	}
	return nil
}

func (a externalSubjectAssertion) validate() error {
	return errors.Join(checkEmail("email", a.Email), checkLen("issuer", a.Issuer, 1, 255),
		checkLen("user_code", a.UserCode, 1, 32), checkLen("nonce", a.Nonce, 1, 128))
}

func (g approvalGrant) validate() error {
	return errors.Join(checkEmail("subject_email", g.SubjectEmail), checkLen("subject_issuer", g.SubjectIssuer, 1, 255),
		checkLen("user_code", g.UserCode, 1, 32), checkLen("nonce", g.Nonce, 1, 128),
		checkLen("csrf_token", g.CSRFToken, 1, 128))
}

// envelopeKeys signs and verifies envelopes with the one shared key. A token naming another kid is refused rather than
// verified with the active key, as Dify does: a retired kid must never become forgeable.
type envelopeKeys struct {
	secret []byte
	now    func() time.Time
}

func newEnvelopeKeys(secretKey string, now func() time.Time) envelopeKeys {
	if now == nil {
		now = time.Now
	}
	return envelopeKeys{secret: []byte(secretKey), now: now}
}

func (k envelopeKeys) sign(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	t.Header["kid"] = envelopeKeyID
	return t.SignedString(k.secret)
}

// verify checks signature, algorithm, kid, audience and expiry and fills claims.
func (k envelopeKeys) verify(token, aud string, claims jwt.Claims) error {
	if token == "" || len(token) > maxEnvelopeLen {
		return fmt.Errorf("%w: empty or oversized", errInvalidEnvelope)
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithAudience(aud),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(k.now),
	)
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != envelopeKeyID {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		return k.secret, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errInvalidEnvelope, err)
	}
	return nil
}

func (k envelopeKeys) signState(userCode, nonce, callbackURL string) (string, error) {
	s := stateEnvelope{Intent: "device_flow", UserCode: userCode, Nonce: nonce, IDPCallbackURL: callbackURL}
	s.stamp(audStateEnvelope, k.now(), stateEnvelopeTTL)
	return k.sign(s)
}

// verifyAssertion accepts only short-lived assertions: a leaked one (browser history, proxy logs) is useless after 2 minutes.
func (k envelopeKeys) verifyAssertion(token string) (externalSubjectAssertion, error) {
	var a externalSubjectAssertion
	if err := k.verify(token, audExternalSubjectAssertion, &a); err != nil {
		return externalSubjectAssertion{}, err
	}
	now := k.now()
	switch {
	case a.IssuedAt == nil:
		return externalSubjectAssertion{}, fmt.Errorf("%w: no iat", errInvalidEnvelope)
	case a.IssuedAt.After(now.Add(iatSkew)):
		return externalSubjectAssertion{}, fmt.Errorf("%w: issued in the future", errInvalidEnvelope)
	case a.ExpiresAt.Sub(a.IssuedAt.Time) > maxAssertionLifetime, a.ExpiresAt.Sub(now) > maxAssertionLifetime:
		return externalSubjectAssertion{}, fmt.Errorf("%w: lifetime over %s", errInvalidEnvelope, maxAssertionLifetime)
	}
	if err := a.validate(); err != nil {
		return externalSubjectAssertion{}, fmt.Errorf("%w: %w", errInvalidEnvelope, err)
	}
	return a, nil
}

// signGrant mints the approval-grant cookie value with a fresh nonce and CSRF token; issuer is CONSOLE_API_URL, as in Dify.
func (k envelopeKeys) signGrant(issuer, email, subjectIssuer, userCode string) (string, approvalGrant, error) {
	g := approvalGrant{SubjectEmail: email, SubjectIssuer: subjectIssuer, UserCode: userCode,
		Nonce: newSSONonce(), CSRFToken: newSSONonce()}
	g.stamp(audApprovalGrant, k.now(), approvalGrantTTL)
	g.Issuer = issuer
	v, err := k.sign(g)
	return v, g, err
}

func (k envelopeKeys) signStartState(nonce string) (string, error) {
	st := ssoStartState{Nonce: nonce}
	st.stamp(audSSOStartState, k.now(), ssoStartStateTTL)
	return k.sign(st)
}

func (k envelopeKeys) verifyStartState(token string) (ssoStartState, error) {
	var st ssoStartState
	if err := k.verify(token, audSSOStartState, &st); err != nil {
		return ssoStartState{}, err
	}
	if err := checkLen("nonce", st.Nonce, 16, 128); err != nil {
		return ssoStartState{}, fmt.Errorf("%w: %w", errInvalidEnvelope, err)
	}
	return st, nil
}

func (k envelopeKeys) verifyGrant(token string) (approvalGrant, error) {
	var g approvalGrant
	if err := k.verify(token, audApprovalGrant, &g); err != nil {
		return approvalGrant{}, err
	}
	if err := g.validate(); err != nil {
		return approvalGrant{}, fmt.Errorf("%w: %w", errInvalidEnvelope, err)
	}
	return g, nil
}
