package deviceflow

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The poll decision order (RFC 8628 §3.5 leaves it open): unknown/expired/consumed, then the client, then denied, then approved.
func TestPollDecisionOrder(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	e.clock.Set(start)
	otherClient := func(dc string) flowResp {
		return e.postJSON("/oauth/device/token", map[string]string{"client_id": "other-cli", "device_code": dc})
	}

	// Approved: another client is invalid_grant and does not consume the approval; the code's client still gets the token.
	dc, uc := e.issue("")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	wantErr(t, otherClient(dc), http.StatusBadRequest, "invalid_grant")
	if r := e.pollJSON(dc); r.Status != http.StatusOK || !accountTokenRE.MatchString(r.str("access_token")) {
		t.Fatalf("the code's client after a wrong-client poll: %d %s", r.Status, r.Raw)
	}
	// Consumed: expired_token comes before the client check.
	wantErr(t, otherClient(dc), http.StatusBadRequest, "expired_token")

	// Denied: the client check comes before access_denied.
	dc, uc = e.issue("")
	if r := e.postJSON("/oauth/device/deny", map[string]string{"user_code": uc}, e.consoleFor(flowAnn.ID).opts()...); r.Status != http.StatusOK {
		t.Fatalf("deny: %d %s", r.Status, r.Raw)
	}
	wantErr(t, otherClient(dc), http.StatusBadRequest, "invalid_grant")
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "access_denied")

	// Expired while pending: expired_token comes before the client check.
	dc, _ = e.issue("")
	e.clock.Set(start.Add(codeLifetime))
	wantErr(t, otherClient(dc), http.StatusBadRequest, "expired_token")
}

// expires_in_remaining counts down with the clock; it is not the code's lifetime.
func TestLookupRemainingIsRealSeconds(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	e.clock.Set(start)
	_, uc := e.issue("")
	e.clock.Set(start.Add(300 * time.Second))
	r := e.get("/oauth/device/lookup?user_code=" + url.QueryEscape(uc))
	if r.Status != http.StatusOK || r.Body["valid"] != true || r.Body["expires_in_remaining"] != float64(600) {
		t.Fatalf("lookup 300 s after issue: %d %s", r.Status, r.Raw)
	}
	e.clock.Set(start.Add(codeLifetime - 1500*time.Millisecond))
	if r := e.get("/oauth/device/lookup?user_code=" + url.QueryEscape(uc)); r.Body["expires_in_remaining"] != float64(2) {
		t.Fatalf("lookup 1.5 s before expiry: %s", r.Raw)
	}
}

// A body over 64 KiB is 413 on every route, also on routes that never read a body and before any other check.
func TestOversizedBodyIs413OnEveryRoute(t *testing.T) {
	e := newFlowEnv(t, nil)
	tok := e.login(flowAnn, "laptop").str("token")
	big := func() *strings.Reader { return strings.NewReader(strings.Repeat("a", maxBody+1)) }
	for _, c := range []struct {
		method, path string
		opts         []reqOpt
	}{
		{http.MethodDelete, apiPrefix + "/account/sessions/self", []reqOpt{withBearer(tok)}},
		{http.MethodGet, apiPrefix + "/me", []reqOpt{withBearer(tok)}},
		{http.MethodPost, apiPrefix + "/oauth/device/approve", nil},
		{http.MethodGet, "/device", nil},
	} {
		r := e.do(c.method, c.path, "application/json", big(), c.opts...)
		wantErr(t, r, http.StatusRequestEntityTooLarge, "request_too_large")
		if r.Header.Get("X-Frame-Options") != "DENY" || r.Header.Get("Content-Security-Policy") != "frame-ancestors 'none'" ||
			r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Fatalf("%s %s: 413 without the security headers: %v", c.method, c.path, r.Header)
		}
	}
	if r := e.get("/me", withBearer(tok)); r.Status != http.StatusOK {
		t.Fatalf("a refused oversized DELETE revoked the token: %d %s", r.Status, r.Raw)
	}
	// The token endpoint's refusals are never cached, also this one.
	r := e.do(http.MethodPost, apiPrefix+"/oauth/device/token", "application/x-www-form-urlencoded", big())
	wantErr(t, r, http.StatusRequestEntityTooLarge, "request_too_large")
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("413 from the token endpoint with Cache-Control %q", r.Header.Get("Cache-Control"))
	}
}

// Security headers on the answers the other header test does not reach: the page, its assets, 405, 204 and 429.
func TestSecurityHeadersOnThePageAndEmptyAnswers(t *testing.T) {
	e := newFlowEnv(t, nil)
	tok := e.login(flowAnn, "laptop").str("token")
	check := func(what string, r flowResp, wantStatus int, csp string) {
		t.Helper()
		if r.Status != wantStatus {
			t.Fatalf("%s: %d %s", what, r.Status, r.Raw)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer"} {
			if r.Header.Get(k) != v {
				t.Fatalf("%s: %s = %q", what, k, r.Header.Get(k))
			}
		}
		if got := r.Header.Get("Content-Security-Policy"); !strings.Contains(got, csp) {
			t.Fatalf("%s: CSP %q, want it to contain %q", what, got, csp)
		}
	}
	check("page", e.do(http.MethodGet, "/device", "", nil), http.StatusOK, "default-src 'none'")
	check("missing asset", e.do(http.MethodGet, "/device/static/nope.js", "", nil), http.StatusNotFound, "frame-ancestors 'none'")
	check("405", e.do(http.MethodPost, "/device", "", nil), http.StatusMethodNotAllowed, "frame-ancestors 'none'")
	check("204", e.do(http.MethodDelete, apiPrefix+"/account/sessions/self", "", nil, withBearer(tok)), http.StatusNoContent,
		"frame-ancestors 'none'")
	for range limitFailedLookup.n {
		e.get("/oauth/device/lookup?user_code=BBBB-BBBB")
	}
	check("429", e.get("/oauth/device/lookup?user_code=BBBB-BBBB"), http.StatusTooManyRequests, "frame-ancestors 'none'")
}

// The numbers of the rate limits that docs/security.md states.
func TestRateLimitsAreTheSpecNumbers(t *testing.T) {
	e := newFlowEnv(t, nil)
	for _, c := range []struct {
		name   string
		got    limit
		n      int
		window time.Duration
	}{
		{"device code per IP", limitDeviceCode, 60, time.Hour},
		{"lookup per IP", limitLookup, 60, 5 * time.Minute},
		{"failed lookups per IP", limitFailedLookup, 20, 10 * time.Minute},
		{"sso-initiate per IP", limitSSOInitiate, 60, time.Hour},
		{"approve/deny per account (DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR)", e.srv.limitApprove(), 10, time.Hour},
		{"approve-external per email", limitApproveExtMail, 10, time.Hour},
		{"/me and /account per token", limitMe, 60, time.Minute},
	} {
		if c.got.n != c.n || c.got.window != c.window {
			t.Errorf("%s: %d per %s, want %d per %s", c.name, c.got.n, c.got.window, c.n, c.window)
		}
	}
	prefixes := map[string]bool{}
	for _, l := range []limit{limitDeviceCode, limitLookup, limitFailedLookup, limitSSOInitiate, e.srv.limitApprove(),
		limitApproveExtMail, limitMe} {
		if prefixes[l.prefix] {
			t.Errorf("two limits share the key prefix %q", l.prefix)
		}
		prefixes[l.prefix] = true
	}
}

// Without a join marked current, the default workspace is the first membership (Bob has one, not current).
func TestDefaultWorkspaceFallsBackToTheFirstMembership(t *testing.T) {
	e := newFlowEnv(t, nil)
	r := e.login(flowBob, "laptop")
	if r.str("default_workspace_id") != flowAlpha.ID {
		t.Fatalf("poll: default_workspace_id %q, want %q: %s", r.str("default_workspace_id"), flowAlpha.ID, r.Raw)
	}
	if me := e.get("/me", withBearer(r.str("token"))); me.str("default_workspace_id") != flowAlpha.ID {
		t.Fatalf("/me: %s", me.Raw)
	}
}

// deviceflow authenticates every request itself: identity headers meant for the upstream of extauthz carry no weight here.
func TestIdentityHeadersAreNotCredentials(t *testing.T) {
	e := newFlowEnv(t, nil)
	_, uc := e.issue("")
	forged := []reqOpt{withHeader("X-Authgate-Account-Id", flowAnn.ID), withHeader("X-Authgate-Subject-Email", flowAnn.Email),
		withHeader("X-Authgate-Subject-Type", "account"), withHeader("X-Authgate-Token-Id", "0a000000-0000-4000-8000-0000000000ff")}
	wantErr(t, e.get("/me", forged...), http.StatusUnauthorized, "invalid_token")
	wantErr(t, e.get("/account/sessions", forged...), http.StatusUnauthorized, "invalid_token")
	wantErr(t, e.postJSON("/oauth/device/approve", map[string]string{"user_code": uc}, forged...), http.StatusUnauthorized,
		"login_required")
}

// RFC 8628 §3.1: scope and unknown parameters are ignored whatever their JSON type.
func TestScopeAndUnknownJSONParametersAreIgnored(t *testing.T) {
	e := newFlowEnv(t, nil)
	r := e.postJSON("/oauth/device/code", map[string]any{"client_id": "difyctl", "scope": []string{"openid", "apps:run"},
		"extra": map[string]any{"nested": 1}, "flag": true})
	if r.Status != http.StatusOK || r.str("device_code") == "" {
		t.Fatalf("device code with scope and unknown members: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.postJSON("/oauth/device/token", map[string]any{"client_id": "difyctl", "device_code": r.str("device_code"),
		"scope": 7, "extra": []int{1}}), http.StatusBadRequest, "authorization_pending")
}
