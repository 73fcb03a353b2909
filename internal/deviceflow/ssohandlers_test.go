package deviceflow

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authgate/authgate/internal/tokens"
)

func TestSSOBranchEndToEndMintsExternalToken(t *testing.T) {
	h := newWebHarness(t, true, nil)
	h.ent.SetSSOInitiateURL("https://idp.partner.example/authorize?x=1")
	deviceCode, userCode := h.issue()

	// sso-initiate, pressed on the page, hands the enterprise service a state envelope for this code and tells the page
	// where the IdP is.
	rec := h.ssoInitiate(strings.ToLower(userCode), h.openPage())
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"url":"https://idp.partner.example/authorize?x=1"}` {
		t.Fatalf("sso-initiate: %d %s", rec.Code, rec.Body)
	}
	if c := cookieNamed(rec, approvalGrantCookieName); c == nil || c.MaxAge >= 0 {
		t.Errorf("sso-initiate did not clear a stale grant: %v", c)
	}
	calls := h.ent.Requests()
	if len(calls) != 1 || calls[0].Path != "/device-flow/sso-initiate" {
		t.Fatalf("enterprise calls = %+v", calls)
	}
	var sent struct {
		SignedState string `json:"signed_state"`
	}
	if err := json.Unmarshal(calls[0].Body, &sent); err != nil {
		t.Fatal(err)
	}
	var state stateEnvelope
	if err := h.srv.envelopes().verify(sent.SignedState, audStateEnvelope, &state); err != nil {
		t.Fatalf("state envelope: %v", err)
	}
	if state.UserCode != userCode || state.Intent != "device_flow" || state.Nonce == "" ||
		state.IDPCallbackURL != "http://api.example/openapi/v1/oauth/device/sso-complete" ||
		state.expiry().Sub(state.IssuedAt.Time) != 900*time.Second {
		t.Errorf("state = %+v", state)
	}

	grant := h.completeSSO("Ext.User@Partner.example", userCode)
	rec = h.do("GET", "/openapi/v1/oauth/device/approval-context", nil, nil, grant)
	var ctxBody map[string]string
	decodeInto(t, rec, &ctxBody)
	if rec.Code != http.StatusOK || ctxBody["subject_email"] != "ext.user@partner.example" ||
		ctxBody["subject_issuer"] != "https://idp.partner.example" || ctxBody["user_code"] != userCode ||
		ctxBody["csrf_token"] == "" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("approval-context: %d %v", rec.Code, ctxBody)
	}
	if exp, err := time.Parse(time.RFC3339, ctxBody["expires_at"]); err != nil || time.Until(exp) > 300*time.Second || time.Until(exp) < 250*time.Second {
		t.Errorf("expires_at = %q (%v)", ctxBody["expires_at"], err)
	}

	// Approval records the subject only; the token is minted by the poll.
	if code, body := h.poll(deviceCode); code != http.StatusBadRequest || body["error"] != codeAuthorizationPending {
		t.Fatalf("poll before approval: %d %v", code, body)
	}
	rec = h.do("POST", "/openapi/v1/oauth/device/approve-external", map[string]string{"user_code": userCode},
		csrfHeaderOf(ctxBody["csrf_token"]), grant)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"approved"}` {
		t.Fatalf("approve-external: %d %s", rec.Code, rec.Body)
	}
	if c := cookieNamed(rec, approvalGrantCookieName); c == nil || c.MaxAge >= 0 || c.Path != approvalGrantCookiePath {
		t.Errorf("approve-external did not clear the grant cookie: %v", c)
	}

	// Approved is decided before the poll clock: this poll wins the consume script although it follows the last one at once.
	code, body := h.poll(deviceCode)
	tok, _ := body["access_token"].(string)
	if code != http.StatusOK || !strings.HasPrefix(tok, "dfoe_") || body["token"] != tok || body["subject_type"] != "external_sso" ||
		body["subject_email"] != "ext.user@partner.example" || body["subject_issuer"] != "https://idp.partner.example" ||
		body["account"] != nil {
		t.Fatalf("poll after approval: %d %v", code, body)
	}
	if ws, _ := body["workspaces"].([]any); ws == nil || len(ws) != 0 {
		t.Errorf("workspaces = %v, want []", body["workspaces"])
	}
	if _, err := tokens.Parse(tok); err != nil {
		t.Errorf("minted token does not parse: %v", err)
	}
	if v, present := body["default_workspace_id"]; !present || v != nil {
		t.Errorf("default_workspace_id = %v (present %v), want null", v, present)
	}
	for _, secret := range []string{tok, grant.Value, deviceCode, sent.SignedState} {
		if strings.Contains(h.logs.String(), secret) {
			t.Fatal("a token, grant cookie, device code or signed state was logged in clear")
		}
	}

	// The grant was used up with the approval.
	rec = h.do("POST", "/openapi/v1/oauth/device/approve-external", map[string]string{"user_code": userCode},
		csrfHeaderOf(ctxBody["csrf_token"]), grant)
	wantError(t, rec, http.StatusConflict, codeUserCodeNotPending)
}

func TestSSOCompleteRefusals(t *testing.T) {
	h := newWebHarness(t, true, nil)
	_, userCode := h.issue()
	now := time.Now()
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"aud": audExternalSubjectAssertion, "iat": now.Unix(), "exp": now.Add(60 * time.Second).Unix(),
			"email": "ext@partner.example", "issuer": "https://idp.partner.example", "user_code": userCode, "nonce": newSSONonce()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	secret := []byte(testSecretKey)
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{
		"bad signature":  signRaw(t, jwt.SigningMethodHS256, []byte("not-the-secret"), envelopeKeyID, claims(nil)),
		"wrong audience": signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, claims(func(c jwt.MapClaims) { c["aud"] = audStateEnvelope })),
		"alg none":       noneTok,
		"RS256":          signRaw(t, jwt.SigningMethodRS256, testRSAKey(t), envelopeKeyID, claims(nil)),
		"expired": signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, claims(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = now.Add(-100*time.Second).Unix(), now.Add(-10*time.Second).Unix()
		})),
		"lifetime over 120 s": signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, claims(func(c jwt.MapClaims) {
			c["exp"] = now.Add(121 * time.Second).Unix()
		})),
		"missing": "",
	}
	for name, assertion := range refused {
		t.Run(name, func(t *testing.T) {
			rec := h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+url.QueryEscape(assertion), nil, nil)
			wantError(t, rec, http.StatusBadRequest, codeInvalidSSOAssertion)
			if cookieNamed(rec, approvalGrantCookieName) != nil {
				t.Error("a refused assertion set a cookie")
			}
			if assertion != "" && strings.Contains(h.logs.String(), assertion) {
				t.Error("the assertion was logged")
			}
		})
	}

	t.Run("replayed nonce", func(t *testing.T) {
		assertion := signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, claims(nil))
		target := "/openapi/v1/device/sso-complete?sso_assertion=" + url.QueryEscape(assertion) // the second mount of the route
		if rec := h.do("GET", target, nil, nil); rec.Code != http.StatusFound {
			t.Fatalf("first use: %d %s", rec.Code, rec.Body)
		}
		wantError(t, h.do("GET", target, nil, nil), http.StatusBadRequest, codeInvalidSSOAssertion)
		if strings.Contains(h.logs.String(), assertion) {
			t.Error("the assertion was logged")
		}
	})

	t.Run("code not pending", func(t *testing.T) {
		unknown := signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, claims(func(c jwt.MapClaims) { c["user_code"] = "BBBB-BBBB" }))
		wantError(t, h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+url.QueryEscape(unknown), nil, nil),
			http.StatusConflict, codeUserCodeNotPending)
		_, denied := h.issue()
		if _, err := h.srv.State().Deny(context.Background(), denied, tokens.ExternalSubject("x@y.example", "idp"), time.Now()); err != nil {
			t.Fatal(err)
		}
		resolved := signRaw(t, jwt.SigningMethodHS256, secret, envelopeKeyID, claims(func(c jwt.MapClaims) { c["user_code"] = denied }))
		wantError(t, h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+url.QueryEscape(resolved), nil, nil),
			http.StatusConflict, codeUserCodeNotPending)
	})

	t.Run("email of a Dify account", func(t *testing.T) {
		assertion := h.assertion(strings.ToUpper(webAccount.Email), userCode, newSSONonce())
		rec := h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+url.QueryEscape(assertion), nil, nil)
		if rec.Code != http.StatusFound || rec.Header().Get("Location") != "http://console.example/device?sso_error=email_belongs_to_dify_account" {
			t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Location"))
		}
		if cookieNamed(rec, approvalGrantCookieName) != nil {
			t.Error("a grant cookie was set for a Dify account's email")
		}
		if !strings.Contains(h.logs.String(), `"event":"oauth.device_flow_rejected"`) {
			t.Error("no oauth.device_flow_rejected audit event")
		}
	})
}

func TestApprovalGrantCookieAttributes(t *testing.T) {
	for _, tc := range []struct {
		apiURL string
		secure bool
	}{{"http://api.example", false}, {"https://api.example", true}} {
		t.Run(tc.apiURL, func(t *testing.T) {
			h := newWebHarness(t, true, func(c *Config) { c.ConsoleAPIURL = tc.apiURL })
			_, userCode := h.issue()
			rec := h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+
				url.QueryEscape(h.assertion("ext@partner.example", userCode, newSSONonce())), nil, nil)
			raw := rec.Header().Get("Set-Cookie")
			c := cookieNamed(rec, approvalGrantCookieName)
			if c == nil {
				t.Fatalf("no cookie: %d %s", rec.Code, rec.Body)
			}
			if c.Path != "/openapi/v1/oauth/device" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge != 300 ||
				c.Secure != tc.secure || c.Domain != "" || !strings.Contains(raw, "Max-Age=300") {
				t.Errorf("cookie attributes: %s", raw)
			}
			g := h.grantOf(c)
			if g.Issuer != tc.apiURL || g.UserCode != userCode || g.SubjectEmail != "ext@partner.example" {
				t.Errorf("grant claims = %+v", g)
			}
		})
	}
}

func TestExternalApprovalChecksInOrder(t *testing.T) {
	h := newWebHarness(t, true, nil)
	_, userCode := h.issue()
	grant := h.completeSSO("ext@partner.example", userCode)
	csrf := csrfHeaderOf(h.grantOf(grant).CSRFToken)
	body := map[string]string{"user_code": userCode}
	const approve = "/openapi/v1/oauth/device/approve-external"

	wantError(t, h.do("POST", approve, body, csrf), http.StatusUnauthorized, codeInvalidSession)
	tampered := *grant
	tampered.Value = grant.Value[:len(grant.Value)-2] + "xx"
	wantError(t, h.do("POST", approve, body, csrf, &tampered), http.StatusUnauthorized, codeInvalidSession)
	wantError(t, h.do("GET", "/openapi/v1/oauth/device/approval-context", nil, nil, &tampered), http.StatusUnauthorized, codeInvalidSession)
	wantError(t, h.do("POST", approve, body, nil, grant), http.StatusForbidden, codeCSRFInvalid)
	wantError(t, h.do("POST", approve, body, csrfHeaderOf("forged"), grant), http.StatusForbidden, codeCSRFInvalid)
	wantError(t, h.do("POST", approve, map[string]string{"user_code": "BBBB-BBBB"}, csrf, grant), http.StatusBadRequest, codeUserCodeMismatch)

	// A grant for a Dify account's email (e.g. the account was created after SSO completed) cannot approve.
	accountGrant, _, err := h.srv.envelopes().signGrant(h.cfg.ConsoleAPIURL, tokens.NormalizeEmail(webAccount.Email), "idp", userCode)
	if err != nil {
		t.Fatal(err)
	}
	accountCookie := &http.Cookie{Name: approvalGrantCookieName, Value: accountGrant}
	wantError(t, h.do("POST", approve, body, csrfHeaderOf(h.grantOf(accountCookie).CSRFToken), accountCookie),
		http.StatusForbidden, codeEmailIsDifyAccount)

	// A nonce used by a concurrent request cannot be used again.
	g := h.grantOf(grant)
	if first, err := h.srv.nonces().consume(context.Background(), grantNonceKeyPrefix, g.Nonce, g.expiry()); err != nil || !first {
		t.Fatalf("consume: %v %v", first, err)
	}
	wantError(t, h.do("POST", approve, body, csrf, grant), http.StatusUnauthorized, codeSessionAlreadyUsed)

	// deny-external with a fresh grant denies the code, and the poll then says access_denied.
	deviceCode, userCode2 := h.issue()
	grant2 := h.completeSSO("ext@partner.example", userCode2)
	rec := h.do("POST", "/openapi/v1/oauth/device/deny-external", map[string]string{"user_code": strings.ToLower(userCode2)},
		csrfHeaderOf(h.grantOf(grant2).CSRFToken), grant2)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"denied"}` {
		t.Fatalf("deny-external: %d %s", rec.Code, rec.Body)
	}
	if c := cookieNamed(rec, approvalGrantCookieName); c == nil || c.MaxAge >= 0 {
		t.Errorf("deny-external did not clear the grant cookie")
	}
	if code, out := h.poll(deviceCode); code != http.StatusBadRequest || out["error"] != codeAccessDenied {
		t.Fatalf("poll after deny: %d %v", code, out)
	}
	wantError(t, h.do("POST", "/openapi/v1/oauth/device/deny-external", map[string]string{"user_code": userCode2},
		csrfHeaderOf(h.grantOf(grant2).CSRFToken), grant2), http.StatusConflict, codeUserCodeNotPending)
}

func TestApproveExternalRateLimitPerEmail(t *testing.T) {
	h := newWebHarness(t, true, nil)
	start := time.Now()
	_, userCode := h.issue()
	grant := h.completeSSO("ext@partner.example", userCode)
	for i := range 10 {
		rec := h.do("POST", "/openapi/v1/oauth/device/approve-external", map[string]string{"user_code": userCode}, nil, grant)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("attempt %d: %d %s", i+1, rec.Code, rec.Body)
		}
	}
	rec := h.do("POST", "/openapi/v1/oauth/device/approve-external", map[string]string{"user_code": userCode}, nil, grant)
	wantError(t, rec, http.StatusTooManyRequests, codeRateLimited)
	wantRetryAfter(t, rec.Header(), time.Hour, start)
}

// wantRetryAfter asserts whole seconds within a window that began during the test.
func wantRetryAfter(t *testing.T, h http.Header, window time.Duration, testStart time.Time) {
	t.Helper()
	secs, err := strconv.Atoi(h.Get("Retry-After"))
	low := int((window - time.Since(testStart)).Seconds()) - 1
	if err != nil || secs < 1 || secs > int(window.Seconds()) || secs < low {
		t.Errorf("Retry-After %q, want whole seconds within [%d, %d]", h.Get("Retry-After"), low, int(window.Seconds()))
	}
}

func TestSSOInitiateFailures(t *testing.T) {
	t.Run("enterprise down", func(t *testing.T) {
		h := newWebHarness(t, true, nil)
		_, userCode := h.issue()
		h.ent.FailWith(http.StatusServiceUnavailable)
		wantError(t, h.ssoInitiate(userCode, h.openPage()), http.StatusBadGateway, codeSSOInitiateFailed)
	})
	t.Run("plain http IdP behind an https API", func(t *testing.T) {
		h := newWebHarness(t, true, func(c *Config) { c.ConsoleAPIURL = "https://api.example" })
		_, userCode := h.issue()
		h.ent.SetSSOInitiateURL("http://idp.partner.example/authorize")
		wantError(t, h.ssoInitiate(userCode, h.openPage()), http.StatusBadGateway, codeSSOInitiateFailed)
	})
	t.Run("unknown, malformed and resolved codes", func(t *testing.T) {
		h := newWebHarness(t, true, nil)
		st := h.openPage()
		wantError(t, h.ssoInitiate("BBBB-BBBB", st), http.StatusNotFound, codeExpiredOrUnknown)
		wantError(t, h.ssoInitiate("AEIO", st), http.StatusBadRequest, codeInvalidUserCode)
		_, userCode := h.issue()
		if _, err := h.srv.State().Deny(context.Background(), userCode, tokens.ExternalSubject("x@y.example", "idp"), time.Now()); err != nil {
			t.Fatal(err)
		}
		wantError(t, h.ssoInitiate(userCode, st), http.StatusConflict, codeUserCodeNotPending)
		if n := h.ent.RequestCount(); n != 0 {
			t.Errorf("the enterprise service was called %d times for codes that cannot start SSO", n)
		}
	})
	t.Run("rate limit per IP", func(t *testing.T) {
		h := newWebHarness(t, true, nil)
		_, userCode := h.issue()
		st := h.openPage()
		start := time.Now()
		for i := range 60 {
			if rec := h.ssoInitiate(userCode, st); rec.Code != http.StatusOK {
				t.Fatalf("request %d: %d", i+1, rec.Code)
			}
		}
		rec := h.ssoInitiate(userCode, st)
		wantError(t, rec, http.StatusTooManyRequests, codeRateLimited)
		wantRetryAfter(t, rec.Header(), time.Hour, start)
	})
}

func TestSSORoutesAnswer404OnCE(t *testing.T) {
	h := newWebHarness(t, false, nil)
	_, userCode := h.issue()
	grant := &http.Cookie{Name: approvalGrantCookieName, Value: "x"}
	for _, route := range []struct{ method, path string }{
		{"GET", "/openapi/v1/oauth/device/sso-initiate?user_code=" + userCode},
		{"POST", "/openapi/v1/oauth/device/sso-initiate"},
		{"GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion=" + url.QueryEscape(h.assertion("e@x.example", userCode, "n"))},
		{"GET", "/openapi/v1/device/sso-complete?sso_assertion=x"},
		{"GET", "/openapi/v1/oauth/device/approval-context"},
		{"POST", "/openapi/v1/oauth/device/approve-external"},
		{"POST", "/openapi/v1/oauth/device/deny-external"},
	} {
		var body any
		if route.method == "POST" {
			body = map[string]string{"user_code": userCode}
		}
		rec := h.do(route.method, route.path, body, nil, grant)
		wantError(t, rec, http.StatusNotFound, codeNotFound)
	}
	if n := h.ent.RequestCount(); n != 0 {
		t.Errorf("CE called the enterprise service %d times", n)
	}
}

// FuzzGrantCookie: whatever Cookie header a browser (or anyone) sends, approval-context answers the claims of a genuine
// grant (409 once its code is gone) or 401 invalid_session, never anything else.
func FuzzGrantCookie(f *testing.F) {
	h := newWebHarness(f, true, nil)
	_, userCode := h.issue() // pending while the seeds run; approval-context shows a grant only for a pending code
	genuine, _, err := h.srv.envelopes().signGrant(h.cfg.ConsoleAPIURL, "ext@partner.example", "idp", userCode)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(approvalGrantCookieName + "=" + genuine)
	f.Add(approvalGrantCookieName + "=" + genuine + "; " + approvalGrantCookieName + "=x")
	f.Add(approvalGrantCookieName + "=\"" + genuine + "\"")
	f.Add(approvalGrantCookieName + "=a.b.c")
	f.Add(approvalGrantCookieName + "=")
	f.Add("=;;; ;=\x00")
	f.Fuzz(func(t *testing.T, cookie string) {
		req := httptest.NewRequest("GET", "/openapi/v1/oauth/device/approval-context", nil)
		req.Header.Set("Cookie", cookie)
		rec := httptest.NewRecorder()
		h.handler.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var out map[string]string
			if json.Unmarshal(rec.Body.Bytes(), &out) != nil || out["subject_email"] != "ext@partner.example" {
				t.Fatalf("200 with %s", rec.Body)
			}
		case http.StatusConflict: // the genuine grant, once its code expired (a fuzzing run longer than 15 min)
			wantError(t, rec, http.StatusConflict, codeUserCodeNotPending)
		default:
			wantError(t, rec, http.StatusUnauthorized, codeInvalidSession)
		}
	})
}
