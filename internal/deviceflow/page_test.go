package deviceflow

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// consoleSession returns the cookies Dify's console sets for a signed-in account: the passport and the CSRF token.
func (h *webHarness) consoleSession(accountID string) (session, csrf *http.Cookie) {
	h.t.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	passport := signRaw(h.t, jwt.SigningMethodHS256, []byte(testSecretKey), "", jwt.MapClaims{
		"user_id": accountID, "exp": exp, "iss": "SELF_HOSTED", "sub": consolePassportSubject})
	csrfTok := signRaw(h.t, jwt.SigningMethodHS256, []byte(testSecretKey), "", jwt.MapClaims{
		"user_id": accountID, "exp": exp, "sub": accountID})
	return &http.Cookie{Name: h.srv.consoleCookieName("access_token"), Value: passport, Path: "/"},
		&http.Cookie{Name: h.srv.consoleCookieName("csrf_token"), Value: csrfTok, Path: "/"}
}

func TestDevicePageIsSelfContainedAndLockedDown(t *testing.T) {
	h := newWebHarness(t, false, nil)
	rec := h.do("GET", "/device?user_code=BCDF-GHJK", nil, nil)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	hdr := rec.Header()
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") ||
		!strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP = %q", csp)
	}
	for name, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
		if hdr.Get(name) != want {
			t.Errorf("%s = %q, want %q", name, hdr.Get(name), want)
		}
	}
	page := rec.Body.String()
	if regexp.MustCompile(`<script(?:\s+[^>]*)?>[^<]+</script>`).MatchString(page) || strings.Contains(page, " style=") ||
		regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Error("the page has inline script, style or event handlers")
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).MatchString(page) {
		t.Error("the page loads something from another origin")
	}
	if strings.Contains(page, "BCDF-GHJK") {
		t.Error("the user code from the URL was rendered into the page; the script must only prefill it")
	}
	if strings.Contains(page, `id="choose-sso"`) {
		t.Error("CE page offers SSO")
	}
	for _, view := range []string{"code-entry", "chooser", "authorize-account", "authorize-sso", "success", "denied", "expired",
		"rate-limited", "lookup-failed", "sso-error"} {
		if !strings.Contains(page, `id="view-`+view+`"`) {
			t.Errorf("view %s missing", view)
		}
	}
	if !strings.Contains(page, "only approve if you started this yourself, on your own device") &&
		!strings.Contains(page, "Only approve if you started this yourself, on your own device") {
		t.Error("the RFC 8628 §5.4 warning is missing")
	}
	wantSignin := `data-signin-url="http://console.example/signin?redirect_url=%2Fdevice"`
	if !strings.Contains(page, wantSignin) || !strings.Contains(page, `data-signed-in="false"`) {
		t.Errorf("sign-in target or state wrong; want %s", wantSignin)
	}

	// A sign-in return path is fixed whatever the request carries.
	rec = h.do("GET", "/device?redirect_url="+url.QueryEscape("https://evil.example/"), nil, nil)
	if strings.Contains(rec.Body.String(), "evil.example") {
		t.Error("a request parameter reached the page")
	}
}

func TestDevicePageKnowsTheSessionAndEdition(t *testing.T) {
	h := newWebHarness(t, true, nil)
	session, csrf := h.consoleSession(webAccount.ID)
	page := h.do("GET", "/device", nil, nil, session, csrf).Body.String()
	if !strings.Contains(page, `data-signed-in="true"`) || !strings.Contains(page, `id="choose-sso"`) ||
		!strings.Contains(page, `data-csrf-cookie="csrf_token"`) {
		t.Error("signed-in EE page: session, SSO button or CSRF cookie name wrong")
	}
	forged := *session
	forged.Value = session.Value[:len(session.Value)-2] + "xx"
	if page := h.do("GET", "/device", nil, nil, &forged).Body.String(); !strings.Contains(page, `data-signed-in="false"`) {
		t.Error("a forged session counts as signed in")
	}
	secure := newWebHarness(t, true, func(c *Config) { c.ConsoleWebURL, c.ConsoleAPIURL = "https://console.example", "https://api.example" })
	if page := secure.do("GET", "/device", nil, nil).Body.String(); !strings.Contains(page, `data-csrf-cookie="__Host-csrf_token"`) {
		t.Error("https deployment must read the __Host- CSRF cookie")
	}
}

func TestDevicePageSSOErrorsComeFromAFixedTable(t *testing.T) {
	h := newWebHarness(t, true, nil)
	page := h.do("GET", "/device?sso_error=email_belongs_to_dify_account", nil, nil).Body.String()
	if !strings.Contains(page, ssoErrorMessages[codeEmailIsDifyAccount]) || !strings.Contains(page, `data-sso-error="true"`) {
		t.Error("known sso_error not shown")
	}
	injected := `<img src=x onerror=alert(1)>Call +1-555-SCAM`
	page = h.do("GET", "/device?sso_error="+url.QueryEscape(injected), nil, nil).Body.String()
	if strings.Contains(page, "SCAM") || strings.Contains(page, "onerror") || !strings.Contains(page, ssoErrorGeneric) {
		t.Error("an unknown sso_error must show the generic line and nothing of the parameter")
	}
	if page := h.do("GET", "/device?sso_verified=1", nil, nil).Body.String(); !strings.Contains(page, `data-sso-verified="true"`) {
		t.Error("sso_verified not passed to the script")
	}
}

func TestDeviceStaticAssets(t *testing.T) {
	h := newWebHarness(t, false, nil)
	for name, ctype := range map[string]string{"device.js": "text/javascript", "device.css": "text/css"} {
		rec := h.do("GET", "/device/static/"+name, nil, nil)
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), ctype) || rec.Body.Len() < 100 ||
			rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %q %d bytes", name, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
		}
	}
	for _, path := range []string{"/device/static/missing.js", "/device/static/", "/device/static/..%2fdevice.html"} {
		if rec := h.do("GET", path, nil, nil); rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), "<html") {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}

func TestDeviceDetailsNeedASession(t *testing.T) {
	h := newWebHarness(t, false, nil)
	_, userCode := h.issue()
	wantError(t, h.do("GET", "/device/details?user_code="+userCode, nil, nil), http.StatusUnauthorized, codeLoginRequired)
	session, _ := h.consoleSession(webAccount.ID)
	rec := h.do("GET", "/device/details?user_code="+strings.ToLower(strings.ReplaceAll(userCode, "-", "")), nil, nil, session)
	var d deviceDetails
	decodeInto(t, rec, &d)
	created, err := time.Parse(time.RFC3339, d.CreatedAt)
	if rec.Code != http.StatusOK || d.UserCode != userCode || d.ClientID != "difyctl" || d.DeviceLabel != "laptop" ||
		d.CreatorIP != "192.0.2.10" || err != nil || time.Since(created) > time.Minute || d.ExpiresInRemaining < 800 {
		t.Fatalf("details: %d %+v", rec.Code, d)
	}
	wantError(t, h.do("GET", "/device/details?user_code=BBBB-BBBB", nil, nil, session), http.StatusNotFound, codeExpiredOrUnknown)
}
