package deviceflow

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestAccountBranchRefusals(t *testing.T) {
	e := newFlowEnv(t, nil)
	now := e.clock.Now()
	exp := now.Add(time.Hour).Unix()
	good := e.consoleFor(flowAnn.ID)
	passport := func(claims jwt.MapClaims) string { return signHS256(t, flowSecret, claims) }
	validClaims := func() jwt.MapClaims {
		return jwt.MapClaims{"user_id": flowAnn.ID, "exp": exp, "sub": consolePassportSubject}
	}
	session := func(v string) *http.Cookie { return &http.Cookie{Name: "access_token", Value: v} }
	csrfCookie := func(v string) *http.Cookie { return &http.Cookie{Name: "csrf_token", Value: v} }
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, validClaims()).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, validClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, validClaims()).SignedString([]byte(flowSecret))
	if err != nil {
		t.Fatal(err)
	}
	withClaim := func(k string, v any) jwt.MapClaims { c := validClaims(); c[k] = v; return c }
	without := func(k string) jwt.MapClaims { c := validClaims(); delete(c, k); return c }
	goodCSRF := good.csrf
	bobCSRF := e.consoleFor(flowBob.ID).csrf
	unsignedCSRF := func() string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"user_id": flowAnn.ID, "exp": exp}).
			SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	expiredCSRF := passport(jwt.MapClaims{"user_id": flowAnn.ID, "exp": now.Add(-time.Minute).Unix()})
	wrongKeyCSRF := signHS256(t, "another-secret", jwt.MapClaims{"user_id": flowAnn.ID, "exp": exp})

	cases := []struct {
		name   string
		opts   []reqOpt
		status int
		code   string
	}{
		{"no cookie", nil, 401, "login_required"},
		{"bad signature", []reqOpt{withCookies(session(signHS256(t, "wrong-key", validClaims())))}, 401, "login_required"},
		{"alg RS256", []reqOpt{withCookies(session(rs256))}, 401, "login_required"},
		{"alg none", []reqOpt{withCookies(session(none))}, 401, "login_required"},
		{"alg HS512", []reqOpt{withCookies(session(hs512))}, 401, "login_required"},
		{"wrong sub", []reqOpt{withCookies(session(passport(withClaim("sub", "Web API Passport"))))}, 401, "login_required"},
		{"no user_id", []reqOpt{withCookies(session(passport(without("user_id"))))}, 401, "login_required"},
		{"no exp", []reqOpt{withCookies(session(passport(without("exp"))))}, 401, "login_required"},
		{"expired", []reqOpt{withCookies(session(passport(withClaim("exp", now.Add(-time.Second).Unix()))))}, 401, "login_required"},
		{"garbage", []reqOpt{withCookies(session("not.a.jwt"))}, 401, "login_required"},
		{"session in Authorization", []reqOpt{withBearer(good.cookies[0].Value), withCookies(good.cookies[1]),
			withHeader("X-CSRF-Token", goodCSRF)}, 401, "login_required"},
		{"CSRF missing", []reqOpt{withCookies(good.cookies...)}, 403, "csrf_invalid"},
		{"CSRF cookie missing", []reqOpt{withCookies(good.cookies[0]), withHeader("X-CSRF-Token", goodCSRF)}, 403, "csrf_invalid"},
		{"CSRF mismatched", []reqOpt{withCookies(good.cookies[0], csrfCookie(goodCSRF)), withHeader("X-CSRF-Token", bobCSRF)},
			403, "csrf_invalid"},
		{"CSRF unsigned", []reqOpt{withCookies(good.cookies[0], csrfCookie(unsignedCSRF)), withHeader("X-CSRF-Token", unsignedCSRF)},
			403, "csrf_invalid"},
		{"CSRF for another user", []reqOpt{withCookies(good.cookies[0], csrfCookie(bobCSRF)), withHeader("X-CSRF-Token", bobCSRF)},
			403, "csrf_invalid"},
		{"CSRF expired", []reqOpt{withCookies(good.cookies[0], csrfCookie(expiredCSRF)), withHeader("X-CSRF-Token", expiredCSRF)},
			403, "csrf_invalid"},
		{"CSRF wrong key", []reqOpt{withCookies(good.cookies[0], csrfCookie(wrongKeyCSRF)), withHeader("X-CSRF-Token", wrongKeyCSRF)},
			403, "csrf_invalid"},
		{"banned account", e.consoleFor(flowBen.ID).opts(), 403, "account_inactive"},
		{"unknown account", e.consoleFor("0a000000-0000-4000-8000-0000000000ff").opts(), 401, "login_required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, uc := e.issue("")
			for _, path := range []string{"/oauth/device/approve", "/oauth/device/deny"} {
				wantErr(t, e.postJSON(path, map[string]string{"user_code": uc}, c.opts...), c.status, c.code)
			}
			if a, err := e.srv.State().LookupPending(t.Context(), uc, time.Now()); err != nil || a.Status != StatusPending {
				t.Fatalf("a refused request changed the code: %+v %v", a, err)
			}
		})
	}
	if e.logs.count(auditFlowRejected) < len(cases) {
		t.Fatalf("refusals audited %d times", e.logs.count(auditFlowRejected))
	}
	// A CSRF token that names the user in sub only (without user_id) is accepted too.
	subCSRF := passport(jwt.MapClaims{"sub": flowAnn.ID, "exp": exp})
	_, uc := e.issue("")
	r := e.postJSON("/oauth/device/approve", map[string]string{"user_code": uc},
		withCookies(good.cookies[0], csrfCookie(subCSRF)), withHeader("X-CSRF-Token", subCSRF))
	if r.Status != http.StatusOK {
		t.Fatalf("sub-only CSRF: %d %s", r.Status, r.Raw)
	}
	// Resolved: another account, or the other decision, is refused; the same approval again (a retry whose answer was lost)
	// is answered as the first was, and audited once.
	wantErr(t, e.approve(uc, e.consoleFor(flowBob.ID)), http.StatusConflict, "already_resolved")
	wantErr(t, e.postJSON("/oauth/device/deny", map[string]string{"user_code": uc}, good.opts()...), http.StatusConflict,
		"already_resolved")
	approvals := e.logs.count(auditDeviceApproved)
	if r := e.approve(uc, good); r.Status != http.StatusOK || r.str("status") != "approved" {
		t.Fatalf("retried approval: %d %s", r.Status, r.Raw)
	}
	if e.logs.count(auditDeviceApproved) != approvals {
		t.Fatal("a retried approval was audited again")
	}
	wantErr(t, e.postJSON("/oauth/device/approve", map[string]string{}, good.opts()...), http.StatusBadRequest, "invalid_request")
	for _, secret := range []string{good.cookies[0].Value, good.csrf, rs256, subCSRF} {
		if strings.Contains(e.logs.String(), secret) {
			t.Fatal("a session cookie or CSRF token was logged")
		}
	}
}

func TestHostPrefixedCookiesWhenBothURLsAreHTTPS(t *testing.T) {
	e := newFlowEnv(t, func(c *Config) {
		c.ConsoleWebURL, c.ConsoleAPIURL = "https://console.test", "https://api.test"
	})
	good := e.consoleFor(flowAnn.ID)
	if good.cookies[0].Name != "__Host-access_token" || good.cookies[1].Name != "__Host-csrf_token" {
		t.Fatalf("cookie names %s, %s", good.cookies[0].Name, good.cookies[1].Name)
	}
	_, uc := e.issue("")
	plain := []reqOpt{withCookies(&http.Cookie{Name: "access_token", Value: good.cookies[0].Value},
		&http.Cookie{Name: "csrf_token", Value: good.csrf}), withHeader("X-CSRF-Token", good.csrf)}
	wantErr(t, e.postJSON("/oauth/device/approve", map[string]string{"user_code": uc}, plain...), 401, "login_required")
	if r := e.approve(uc, good); r.Status != http.StatusOK {
		t.Fatalf("__Host- session refused: %d %s", r.Status, r.Raw)
	}

	shared := newFlowEnv(t, func(c *Config) {
		c.ConsoleWebURL, c.ConsoleAPIURL, c.CookieDomain = "https://console.test", "https://api.test", ".test"
	})
	if n := shared.srv.consoleCookieName("access_token"); n != "access_token" {
		t.Fatalf("with COOKIE_DOMAIN the name is %s", n)
	}
}
