package deviceflow

import (
	"context"
	"encoding/json"
	"github.com/authgate/authgate/internal/audit"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/authgate/authgate/internal/tokens"
)

var accountTokenRE = regexp.MustCompile(`^dfoa_[A-Za-z0-9_-]{43}$`)

// recordingTransport keeps every token-endpoint answer a client received.
type recordingTransport struct {
	mu      sync.Mutex
	bodies  []string
	basic   int
	onPoll  func()
	polled  chan struct{}
	wrapped http.RoundTripper
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := rt.wrapped.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/oauth/device/token") {
		return res, err
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(strings.NewReader(string(raw)))
	rt.mu.Lock()
	rt.bodies = append(rt.bodies, string(raw))
	if _, _, ok := req.BasicAuth(); ok {
		rt.basic++
	}
	rt.mu.Unlock()
	select {
	case rt.polled <- struct{}{}:
	default:
	}
	return res, nil
}

func TestAccountFlowWithOAuth2Client(t *testing.T) {
	e := newFlowEnv(t, nil)
	rt := &recordingTransport{wrapped: http.DefaultTransport, polled: make(chan struct{}, 1)}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Transport: rt})
	// AuthStyle left at its default: the client probes HTTP Basic first and repeats a refused poll without it.
	conf := &oauth2.Config{ClientID: "difyctl", Endpoint: oauth2.Endpoint{
		DeviceAuthURL: e.url + apiPrefix + "/oauth/device/code",
		TokenURL:      e.url + apiPrefix + "/oauth/device/token",
	}}
	da, err := conf.DeviceAuth(ctx, oauth2.SetAuthURLParam("device_label", "ci runner"))
	if err != nil {
		t.Fatal(err)
	}
	if da.VerificationURI != "http://console.test/device" || da.Interval != 5 ||
		da.VerificationURIComplete != "http://console.test/device?user_code="+url.QueryEscape(da.UserCode) {
		t.Fatalf("device auth response %+v", da)
	}
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(da.UserCode) ||
		!regexp.MustCompile(`^dc_[A-Za-z0-9_-]{32}$`).MatchString(da.DeviceCode) {
		t.Fatalf("codes %q %q", da.UserCode, da.DeviceCode)
	}

	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := conf.DeviceAccessToken(ctx, da)
		done <- result{tok, err}
	}()
	// Approve only after the client has polled at least once, so the pending answers are exercised too.
	select {
	case <-rt.polled:
	case <-time.After(30 * time.Second):
		t.Fatal("the client never polled")
	}
	if r := e.approve(da.UserCode, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK || r.str("status") != "approved" {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("no token within 60 s")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !accountTokenRE.MatchString(res.tok.AccessToken) || res.tok.TokenType != "Bearer" {
		t.Fatalf("token %q type %q", res.tok.AccessToken, res.tok.TokenType)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, b := range rt.bodies {
		if strings.Contains(b, "slow_down") {
			t.Fatalf("the standard client was slowed down: %v", rt.bodies)
		}
	}
	if rt.basic == 0 || len(rt.bodies) < 3 {
		t.Fatalf("expected Basic probes and repeated polls, saw %d answers (%d with Basic)", len(rt.bodies), rt.basic)
	}
	me := e.get("/me", withBearer(res.tok.AccessToken))
	if me.Status != http.StatusOK || me.str("subject_email") != "ann@example.com" {
		t.Fatalf("/me: %d %s", me.Status, me.Raw)
	}
}

func TestAccountFlowWithDifyJSONClient(t *testing.T) {
	e := newFlowEnv(t, nil)
	code := e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl", "device_label": "Ann's laptop"})
	if code.Status != http.StatusOK || code.Body["expires_in"] != float64(900) || code.Body["interval"] != float64(5) {
		t.Fatalf("code: %d %s", code.Status, code.Raw)
	}
	if code.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("device code response Cache-Control %q", code.Header.Get("Cache-Control"))
	}
	dc, uc := code.str("device_code"), code.str("user_code")

	// Dify's CLI polls at once: never slowed, just pending.
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "authorization_pending")

	look := e.get("/oauth/device/lookup?user_code=" + url.QueryEscape(strings.ToLower(strings.ReplaceAll(uc, "-", " "))))
	if look.Status != http.StatusOK || look.Body["valid"] != true || look.str("client_id") != "difyctl" ||
		look.str("device_label") != "Ann's laptop" {
		t.Fatalf("lookup: %d %s", look.Status, look.Raw)
	}
	if rem := look.Body["expires_in_remaining"].(float64); rem < 890 || rem > 900 {
		t.Fatalf("expires_in_remaining %v", rem)
	}
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK || r.str("status") != "approved" {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	if n, _ := e.rdb.Keys(t.Context(), "*").Result(); strings.Contains(strings.Join(n, " "), "dfoa_") {
		t.Fatal("a token reached Redis at approval")
	}
	e.clock.Advance(6 * time.Second)
	r := e.pollJSON(dc)
	if r.Status != http.StatusOK {
		t.Fatalf("poll: %d %s", r.Status, r.Raw)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("token response Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	tok := r.str("token")
	if !accountTokenRE.MatchString(tok) || r.str("access_token") != tok || r.str("token_type") != "Bearer" {
		t.Fatalf("token fields: %s", r.Raw)
	}
	if r.str("subject_type") != "account" || r.str("subject_email") != "ann@example.com" ||
		r.str("subject_issuer") != "dify:account" || r.str("default_workspace_id") != flowBeta.ID || r.str("token_id") == "" {
		t.Fatalf("subject fields: %s", r.Raw)
	}
	if in := r.Body["expires_in"].(float64); in != 14*24*3600 {
		t.Fatalf("expires_in %v", in)
	}
	if _, err := time.Parse(time.RFC3339, r.str("expires_at")); err != nil {
		t.Fatalf("expires_at %q", r.str("expires_at"))
	}
	acct := r.Body["account"].(map[string]any)
	if acct["id"] != flowAnn.ID || acct["email"] != flowAnn.Email || acct["name"] != "Ann" {
		t.Fatalf("account %v", acct)
	}
	raw, _ := json.Marshal(r.Body["workspaces"])
	want := `[{"id":"` + flowAlpha.ID + `","name":"Alpha","role":"owner"},{"id":"` + flowBeta.ID + `","name":"Beta","role":"editor"}]`
	if string(raw) != want {
		t.Fatalf("workspaces %s, want %s", raw, want)
	}
	row, err := e.store.LookupByHash(t.Context(), tokens.Hash(tok))
	if err != nil || row.DeviceLabel != "Ann's laptop" || row.AccountID != flowAnn.ID || row.Prefix != "dfoa_" {
		t.Fatalf("stored row %+v, %v", row, err)
	}
	// Consumed: the user code is gone; the device code's hash stays as a consumed marker until the code would have expired.
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	dkey := deviceKey(hashDeviceCode(dc))
	if e.rdb.Exists(t.Context(), userKey(uc)).Val() != 0 || e.rdb.HGet(t.Context(), dkey, fStatus).Val() != "consumed" {
		t.Fatalf("after delivery: user_code key %d, device status %q", e.rdb.Exists(t.Context(), userKey(uc)).Val(),
			e.rdb.HGet(t.Context(), dkey, fStatus).Val())
	}
	if ttl := e.rdb.PTTL(t.Context(), dkey).Val(); ttl <= 0 || ttl > codeLifetime {
		t.Fatalf("consumed marker TTL %v", ttl)
	}
	if n := e.rdb.DBSize(t.Context()).Val(); n != countRateLimitKeys(t, e)+2 { // the marker and the slot's epoch
		t.Fatalf("device-flow keys left in Redis after the token was delivered: %v", e.rdb.Keys(t.Context(), "*").Val())
	}
	for _, ev := range []audit.Event{auditDeviceCodeIssued, auditDeviceApproved, auditTokenMinted} {
		if e.logs.count(ev) != 1 {
			t.Fatalf("audit %s logged %d times", ev, e.logs.count(ev))
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, tok) || strings.Contains(logs, dc) {
		t.Fatal("a token or device code was logged in clear")
	}
}

// countRateLimitKeys counts the limiter's keys, which outlive the flow by design.
func countRateLimitKeys(t *testing.T, e *flowEnv) int64 {
	keys, err := e.rdb.Keys(t.Context(), "rl:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(keys))
}

func TestFormPollNeedsGrantType(t *testing.T) {
	e := newFlowEnv(t, nil)
	dc, _ := e.issue("")
	wantErr(t, e.postForm("/oauth/device/token", url.Values{"client_id": {"difyctl"}, "device_code": {dc}}),
		http.StatusBadRequest, "invalid_request")
	wantErr(t, e.postForm("/oauth/device/token", url.Values{"client_id": {"difyctl"}, "device_code": {dc},
		"grant_type": {"authorization_code"}}), http.StatusBadRequest, "unsupported_grant_type")
	wantErr(t, e.postForm("/oauth/device/token", url.Values{"device_code": {dc}, "grant_type": {deviceCodeGrant}}),
		http.StatusBadRequest, "invalid_request")
	wantErr(t, e.postForm("/oauth/device/token", url.Values{"client_id": {"difyctl"}, "device_code": {dc},
		"grant_type": {deviceCodeGrant}, "scope": {"anything"}, "extra": {"ignored"}}), http.StatusBadRequest, "authorization_pending")
}

func TestSlowDownGrowsTheInterval(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	e.clock.Set(start)
	dc, _ := e.issue("")
	poll := func(at time.Duration, opts ...reqOpt) flowResp {
		t.Helper()
		e.clock.Set(start.Add(at))
		return e.pollJSON(dc, opts...)
	}
	wantErr(t, poll(0), http.StatusBadRequest, "authorization_pending")                      // first poll: never slowed
	wantErr(t, poll(1*time.Second), http.StatusBadRequest, "slow_down")                      // interval 5 -> 10, clock at 1 s
	wantErr(t, poll(10500*time.Millisecond), http.StatusBadRequest, "authorization_pending") // 9.5 s later: within slack
	wantErr(t, poll(19*time.Second), http.StatusBadRequest, "slow_down")                     // 8.5 s < 9.5 s: 10 -> 15
	wantErr(t, poll(33*time.Second), http.StatusBadRequest, "slow_down")                     // 14 s < 14.5 s: 15 -> 20
	wantErr(t, poll(52600*time.Millisecond), http.StatusBadRequest, "authorization_pending") // 19.6 s >= 19.5 s

	// A Basic poll answered with an error leaves the clock alone, so the plain retry right after is not slowed.
	wantErr(t, poll(73*time.Second, withBasic("difyctl", "")), http.StatusBadRequest, "authorization_pending")
	wantErr(t, poll(73100*time.Millisecond), http.StatusBadRequest, "authorization_pending")
	wantErr(t, poll(74*time.Second), http.StatusBadRequest, "slow_down")

	// The interval persisted in the state: 25 s now.
	a, err := e.srv.State().Lookup(t.Context(), mustUserCodeOf(t, e, dc), start.Add(75*time.Second))
	if err != nil || a.Interval != 25*time.Second {
		t.Fatalf("interval %v, %v", a.Interval, err)
	}
}

// mustUserCodeOf reads the user code of a device code from Redis.
func mustUserCodeOf(t *testing.T, e *flowEnv, deviceCode string) string {
	t.Helper()
	uc, err := e.rdb.HGet(t.Context(), deviceKey(hashDeviceCode(deviceCode)), fUserCode).Result()
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

func TestConcurrentPollersGetExactlyOneToken(t *testing.T) {
	e := newFlowEnv(t, nil)
	dc, uc := e.issue("")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatal(r.Raw)
	}
	// Polls that arrive while the winner holds its claim are told to wait; those after its completion that the code is used.
	const pollers = 20
	results := make([]flowResp, pollers)
	var wg sync.WaitGroup
	for i := range pollers {
		wg.Go(func() { results[i] = e.pollJSON(dc) })
	}
	wg.Wait()
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	ok := 0
	for _, r := range results {
		switch {
		case r.Status == http.StatusOK && accountTokenRE.MatchString(r.str("access_token")):
			ok++
		case r.Status == http.StatusBadRequest && (r.str("error") == "expired_token" || r.str("error") == "authorization_pending"):
		default:
			t.Fatalf("unexpected poll answer %d %s", r.Status, r.Raw)
		}
	}
	if ok != 1 {
		t.Fatalf("%d pollers got a token, want exactly 1", ok)
	}
	rows, total, err := e.store.ListLive(t.Context(), tokens.AccountSubject(flowAnn.ID, flowAnn.Email), time.Now(), tokens.Page{Page: 1, Limit: 10})
	if err != nil || total != 1 || len(rows) != 1 {
		t.Fatalf("live rows %d (%v)", total, err)
	}
}

func TestApproveAndDenyRaceHasOneWinner(t *testing.T) {
	e := newFlowEnv(t, nil)
	c := e.consoleFor(flowAnn.ID)
	for range 5 {
		_, uc := e.issue("")
		var wg sync.WaitGroup
		var approve, deny flowResp
		wg.Go(func() { approve = e.approve(uc, c) })
		wg.Go(func() {
			deny = e.postJSON("/oauth/device/deny", map[string]string{"user_code": uc}, c.opts()...)
		})
		wg.Wait()
		statuses := map[int]int{approve.Status: 1}
		statuses[deny.Status]++
		if statuses[http.StatusOK] != 1 || statuses[http.StatusConflict] != 1 {
			t.Fatalf("approve %d %s, deny %d %s", approve.Status, approve.Raw, deny.Status, deny.Raw)
		}
		loser := approve
		if approve.Status == http.StatusOK {
			loser = deny
		}
		wantErr(t, loser, http.StatusConflict, "already_resolved")
	}
}

func TestDeniedCodeAnswersAccessDenied(t *testing.T) {
	e := newFlowEnv(t, nil)
	dc, uc := e.issue("")
	r := e.postJSON("/oauth/device/deny", map[string]string{"user_code": uc}, e.consoleFor(flowAnn.ID).opts()...)
	if r.Status != http.StatusOK || r.str("status") != "denied" {
		t.Fatalf("deny: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "access_denied")
	if e.logs.count(auditDeviceDenied) != 1 {
		t.Fatal("denial not audited")
	}
	look := e.get("/oauth/device/lookup?user_code=" + uc)
	if look.Body["valid"] != false {
		t.Fatalf("lookup of a denied code: %s", look.Raw)
	}
}

func TestExpiredAndUnknownCodes(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	e.clock.Set(start)
	dc, uc := e.issue("")
	wantErr(t, e.pollJSON("dc_"+strings.Repeat("A", 32)), http.StatusBadRequest, "expired_token")
	wantErr(t, e.pollJSON(strings.Repeat("x", 500)), http.StatusBadRequest, "expired_token")
	wantErr(t, e.postJSON("/oauth/device/token", map[string]string{"client_id": "other-cli", "device_code": dc}),
		http.StatusBadRequest, "invalid_grant")

	e.clock.Set(start.Add(codeLifetime))
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	wantErr(t, e.approve(uc, e.consoleFor(flowAnn.ID)), http.StatusNotFound, "expired_or_unknown")
	wantErr(t, e.approve("BBBB-BBBB", e.consoleFor(flowAnn.ID)), http.StatusNotFound, "expired_or_unknown")
	wantErr(t, e.approve("not a code", e.consoleFor(flowAnn.ID)), http.StatusNotFound, "expired_or_unknown")
	if look := e.get("/oauth/device/lookup?user_code=" + uc); look.Status != http.StatusOK || look.Body["valid"] != false {
		t.Fatalf("lookup of an expired code: %d %s", look.Status, look.Raw)
	}
}

func TestSecondLoginForTheSameDeviceRotates(t *testing.T) {
	e := newFlowEnv(t, nil)
	first := e.login(flowAnn, "laptop")
	second := e.login(flowAnn, "laptop")
	oldTok, newTok := first.str("token"), second.str("token")
	if oldTok == newTok || first.str("token_id") != second.str("token_id") {
		t.Fatalf("rotation must keep the row id and change the token: %s / %s", first.Raw, second.Raw)
	}
	if _, err := e.store.LookupByHash(t.Context(), tokens.Hash(oldTok)); err == nil {
		t.Fatal("the old token's hash is still live in Postgres")
	}
	if !e.tombstoned(tokens.Hash(oldTok)) {
		t.Fatal("the old token's hash was not tombstoned")
	}
	wantErr(t, e.get("/me", withBearer(oldTok)), http.StatusUnauthorized, "invalid_token")
	if r := e.get("/me", withBearer(newTok)); r.Status != http.StatusOK {
		t.Fatalf("new token refused: %d %s", r.Status, r.Raw)
	}
	if e.logs.count(auditTokenRotated) != 1 {
		t.Fatal("rotation not audited")
	}
	// Another device label is another session.
	other := e.login(flowAnn, "desktop")
	if other.str("token_id") == first.str("token_id") {
		t.Fatal("a different device reused the row")
	}
}

func TestDeviceCodeRequestValidation(t *testing.T) {
	e := newFlowEnv(t, nil)
	wantErr(t, e.postJSON("/oauth/device/code", map[string]string{"client_id": "stranger"}), http.StatusBadRequest, "invalid_client")
	wantErr(t, e.postJSON("/oauth/device/code", map[string]string{}), http.StatusBadRequest, "invalid_client")
	for _, label := range []string{"", strings.Repeat("a", 256), "tab\there", "bidi\u202Eevil", "nul\x00", "\u2066x"} {
		wantErr(t, e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl", "device_label": label}),
			http.StatusBadRequest, "invalid_request")
	}
	wantErr(t, e.postJSON("/oauth/device/code", map[string]any{"client_id": "difyctl", "device_label": 7}),
		http.StatusBadRequest, "invalid_request")
	if r := e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl", "device_label": strings.Repeat("é", 255)}); r.Status != http.StatusOK {
		t.Fatalf("255 characters refused: %s", r.Raw)
	}
	// HTTP Basic with an empty secret names the client; a secret is refused.
	r := e.postForm("/oauth/device/code", url.Values{"scope": {"x"}}, withBasic("other-cli", ""))
	if r.Status != http.StatusOK {
		t.Fatalf("basic client: %d %s", r.Status, r.Raw)
	}
	a, err := e.srv.State().Lookup(t.Context(), r.str("user_code"), time.Now())
	if err != nil || a.ClientID != "other-cli" || a.DeviceLabel != "other-cli device" {
		t.Fatalf("stored %+v %v", a, err)
	}
	wantErr(t, e.postForm("/oauth/device/code", nil, withBasic("difyctl", "secret")), http.StatusBadRequest, "invalid_client")
	wantErr(t, e.postForm("/oauth/device/code", url.Values{"client_id": {"difyctl"}}, withBasic("other-cli", "")),
		http.StatusBadRequest, "invalid_request")
}
