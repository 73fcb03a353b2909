package deviceflow

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authgate/authgate/internal/tokens"
)

// startState is what an open /device page holds to start SSO: the device_sso_state cookie and the nonce in the page.
type startState struct {
	cookie *http.Cookie
	nonce  string
}

var ssoStateAttr = regexp.MustCompile(`data-sso-state="([^"]*)"`)

func parseStartState(t testing.TB, header http.Header, page string) startState {
	t.Helper()
	var st startState
	for _, c := range (&http.Response{Header: header}).Cookies() {
		if c.Name == ssoStartStateCookieName {
			st.cookie = c
		}
	}
	if m := ssoStateAttr.FindStringSubmatch(page); m != nil {
		st.nonce = m[1]
	}
	if st.cookie == nil || st.cookie.Value == "" || st.nonce == "" {
		t.Fatalf("the /device page set no SSO start state (cookie %v, nonce %q)", st.cookie, st.nonce)
	}
	return st
}

// openPage loads /device as a browser would, for the state its SSO button sends.
func (h *webHarness) openPage(cookies ...*http.Cookie) startState {
	h.t.Helper()
	rec := h.do("GET", "/device", nil, nil, cookies...)
	return parseStartState(h.t, rec.Header(), rec.Body.String())
}

// ssoInitiate presses the page's SSO button: a POST with the code and the page's state.
func (h *webHarness) ssoInitiate(userCode string, st startState) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.do("POST", "/openapi/v1/oauth/device/sso-initiate", map[string]string{"user_code": userCode, "state": st.nonce},
		nil, st.cookie)
}

func (e *flowEnv) openPage(opts ...reqOpt) startState {
	e.t.Helper()
	r := e.do(http.MethodGet, devicePagePath, "", nil, opts...)
	return parseStartState(e.t, r.Header, r.Raw)
}

func (e *flowEnv) ssoInitiate(userCode string, st startState, opts ...reqOpt) flowResp {
	e.t.Helper()
	return e.postJSON("/oauth/device/sso-initiate", map[string]string{"user_code": userCode, "state": st.nonce},
		append([]reqOpt{withCookies(st.cookie)}, opts...)...)
}

// TestSSOStartsOnlyFromThePage: a link to sso-initiate leads to the page's code confirmation and starts nothing; SSO starts
// only from a POST that carries the page's signed state cookie and the nonce the page holds, both fresh and matching.
func TestSSOStartsOnlyFromThePage(t *testing.T) {
	h := newWebHarness(t, true, nil)
	_, userCode := h.issue()

	for target, want := range map[string]string{
		"/openapi/v1/oauth/device/sso-initiate?user_code=" + strings.ToLower(userCode):   "http://console.example/device?user_code=" + userCode,
		"/openapi/v1/oauth/device/sso-initiate?user_code=" + url.QueryEscape("<script>"): "http://console.example/device",
		"/openapi/v1/oauth/device/sso-initiate":                                          "http://console.example/device",
	} {
		rec := h.do("GET", target, nil, nil)
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != want {
			t.Errorf("GET %s: %d %q, want 303 to %s", target, rec.Code, rec.Header().Get("Location"), want)
		}
		if cookieNamed(rec, approvalGrantCookieName) != nil {
			t.Errorf("GET %s touched the grant cookie", target)
		}
	}

	st := h.openPage()
	if st.cookie.Path != approvalGrantCookiePath || !st.cookie.HttpOnly || st.cookie.SameSite != http.SameSiteLaxMode ||
		st.cookie.MaxAge != int(ssoStartStateTTL/time.Second) || strings.Contains(st.cookie.Value, st.nonce) {
		t.Errorf("state cookie: %+v (the nonce must travel signed in the cookie, not as it is)", st.cookie)
	}
	if again := h.openPage(st.cookie); again.nonce != st.nonce {
		t.Error("reloading the page changed its nonce: another open tab of the page would stop working")
	}
	otherKey := func() *http.Cookie {
		v := signRaw(t, jwt.SigningMethodHS256, []byte("not-the-secret-key-not-the-secret"), envelopeKeyID, jwt.MapClaims{
			"aud": audSSOStartState, "nonce": st.nonce, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()})
		return &http.Cookie{Name: ssoStartStateCookieName, Value: v}
	}
	expired := func() *http.Cookie {
		v := signRaw(t, jwt.SigningMethodHS256, []byte(testSecretKey), envelopeKeyID, jwt.MapClaims{
			"aud": audSSOStartState, "nonce": st.nonce, "iat": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-time.Minute).Unix()})
		return &http.Cookie{Name: ssoStartStateCookieName, Value: v}
	}
	grantAsState := func() *http.Cookie {
		v, _, err := h.srv.envelopes().signGrant(h.cfg.ConsoleAPIURL, "ext@partner.example", "idp", userCode)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Cookie{Name: ssoStartStateCookieName, Value: v}
	}
	const path = "/openapi/v1/oauth/device/sso-initiate"
	body := func(state string) map[string]string { return map[string]string{"user_code": userCode, "state": state} }
	for name, rec := range map[string]*httptest.ResponseRecorder{
		"no cookie (another site's form)": h.do("POST", path, body(st.nonce), nil),
		"no state field":                  h.do("POST", path, map[string]string{"user_code": userCode}, nil, st.cookie),
		"another nonce":                   h.do("POST", path, body(newSSONonce()), nil, st.cookie),
		"cookie signed with another key":  h.do("POST", path, body(st.nonce), nil, otherKey()),
		"expired cookie":                  h.do("POST", path, body(st.nonce), nil, expired()),
		"another envelope as the cookie":  h.do("POST", path, body(st.nonce), nil, grantAsState()),
	} {
		t.Run(name, func(t *testing.T) { wantError(t, rec, http.StatusForbidden, codeCSRFInvalid) })
	}
	if n := h.ent.RequestCount(); n != 0 {
		t.Fatalf("the enterprise service was called %d times before the page asked", n)
	}

	rec := h.ssoInitiate(userCode, st)
	var out struct {
		URL string `json:"url"`
	}
	decodeInto(t, rec, &out)
	if rec.Code != http.StatusOK || out.URL != h.ent.URL()+"/idp/login" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("sso-initiate from the page: %d %s", rec.Code, rec.Body)
	}
	if n := h.ent.RequestCount(); n != 1 {
		t.Fatalf("enterprise calls = %d, want 1", n)
	}
}

// TestSSOApprovalShowsTheDeviceContext: after SSO the approval screen gets what the account branch shows (client, device
// label, when and from where the request started), and nothing once the code is no longer pending.
func TestSSOApprovalShowsTheDeviceContext(t *testing.T) {
	h := newWebHarness(t, true, nil)
	_, userCode := h.issue()
	grant := h.completeSSO("ext@partner.example", userCode)
	rec := h.do("GET", "/openapi/v1/oauth/device/approval-context", nil, nil, grant)
	var got approvalContext
	decodeInto(t, rec, &got)
	created, err := time.Parse(time.RFC3339, got.CreatedAt)
	if rec.Code != http.StatusOK || got.ClientID != "difyctl" || got.DeviceLabel != "laptop" || got.CreatorIP != "192.0.2.10" ||
		err != nil || time.Since(created) > time.Minute || got.UserCode != userCode || got.SubjectEmail != "ext@partner.example" {
		t.Fatalf("approval-context: %d %+v", rec.Code, got)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("approval-context Cache-Control = %q", cc)
	}
	if _, err := h.srv.State().Deny(context.Background(), userCode, tokens.ExternalSubject("x@y.example", "idp"), time.Now()); err != nil {
		t.Fatal(err)
	}
	rec = h.do("GET", "/openapi/v1/oauth/device/approval-context", nil, nil, grant)
	wantError(t, rec, http.StatusConflict, codeUserCodeNotPending)
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("approval-context refusal Cache-Control = %q", cc)
	}
}

// TestDeviceAnswersAreNotCached: what lookup, /device/details and approval-context tell (client, device label, where a
// request came from) must not be kept by a shared cache and shown to someone else.
func TestDeviceAnswersAreNotCached(t *testing.T) {
	h := newWebHarness(t, true, nil)
	_, userCode := h.issue()
	session, _ := h.consoleSession(webAccount.ID)
	for _, c := range []struct {
		name    string
		target  string
		cookies []*http.Cookie
	}{
		{"lookup", "/openapi/v1/oauth/device/lookup?user_code=" + userCode, nil},
		{"lookup, unknown code", "/openapi/v1/oauth/device/lookup?user_code=BBBB-BBBB", nil},
		{"details", "/device/details?user_code=" + userCode, []*http.Cookie{session}},
		{"details, unknown code", "/device/details?user_code=BBBB-BBBB", []*http.Cookie{session}},
		{"approval-context without a grant", "/openapi/v1/oauth/device/approval-context", nil},
	} {
		rec := h.do("GET", c.target, nil, nil, c.cookies...)
		if rec.Code >= 500 || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d, Cache-Control %q; want no-store", c.name, rec.Code, rec.Header().Get("Cache-Control"))
		}
	}
}

// TestAssertionEmailsAreDifyEmails: an external subject's email is held to Dify's email validator, so nothing that would
// break a header or fold into another address gets a grant.
func TestAssertionEmailsAreDifyEmails(t *testing.T) {
	h := newWebHarness(t, true, nil)
	_, userCode := h.issue()
	for _, email := range []string{"ext\x00@partner.example", "ext\v@partner.example", "ext\u0085@partner.example",
		"ext\u2028@partner.example", "ext\u202e@partner.example", "ext@partner.example\n", "ext@localhost"} {
		rec := h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+
			url.QueryEscape(h.assertion(email, userCode, newSSONonce())), nil, nil)
		wantError(t, rec, http.StatusBadRequest, codeInvalidSSOAssertion)
		if cookieNamed(rec, approvalGrantCookieName) != nil {
			t.Errorf("%q got a grant", email)
		}
	}
	// A letter outside ASCII is an address Dify accepts; it keeps its case, so it is nobody else's address.
	g := h.grantOf(h.completeSSO("\u212Aelvin@Partner.example", userCode))
	if g.SubjectEmail != "\u212Aelvin@partner.example" {
		t.Fatalf("grant subject = %q", g.SubjectEmail)
	}
}
