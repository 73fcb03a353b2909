package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
)

// walkthroughURL finds the URL a printed curl command of the walkthrough calls.
func walkthroughURL(t *testing.T, printed, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("the walkthrough has no line matching %s:\n%s", pattern, printed)
	}
	return m[1]
}

// TestMakeRunWalkthrough starts what `make run` starts, on free ports, and follows the printed walkthrough: start a device
// login, sign in with the dev sign-in, approve, poll for the token, list the workspaces and run the chat app through the
// shim. The CLI path it prints logs in against the shim.
func TestMakeRunWalkthrough(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	opts := Options{ShimAddr: "127.0.0.1:0", DeviceflowAddr: "127.0.0.1:0", ExtauthzAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", UpstreamAddr: "127.0.0.1:0", LogOutput: io.Discard}
	go func() { done <- run(ctx, opts, &out, func(a Addrs) { ready <- a }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("devstack stopped before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("devstack not ready within 10 s")
	}
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("devstack shut down with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("devstack did not stop within 10 s")
		}
	}()
	printed := out.String()

	codeURL := walkthroughURL(t, printed, `curl -s -X POST (\S+/openapi/v1/oauth/device/code) -d client_id=difyctl`)
	signinURL := walkthroughURL(t, printed, `curl -s -c jar (\S+/signin)`)
	approveURL := walkthroughURL(t, printed, `(\S+/openapi/v1/oauth/device/approve)`)
	tokenURL := walkthroughURL(t, printed, `curl -s -X POST (\S+/openapi/v1/oauth/device/token)`)
	workspacesURL := walkthroughURL(t, printed, `curl -s (\S+/openapi/v1/workspaces) -H`)
	appURL := walkthroughURL(t, printed, `curl -sN -X POST (\S+/openapi/v1/apps/\S+/run)`)
	runBody := walkthroughURL(t, printed, `-d '(\{"inputs".*\})'`)
	pageURL := walkthroughURL(t, printed, `Open (\S+/device)\?user_code=`)
	if host := walkthroughURL(t, printed, `difyctl auth login --host (\S+) --insecure`); !strings.HasPrefix(codeURL, host+"/") {
		t.Errorf("difyctl logs in at %s, not the shim the curl steps use (%s)", host, codeURL)
	}

	// 1. Start a device login.
	var code struct {
		DeviceCode      string `json:"device_code"`
		UserCode        string `json:"user_code"`
		VerificationURI string `json:"verification_uri"`
	}
	decode(t, post(t, http.DefaultClient, codeURL, url.Values{"client_id": {"difyctl"}}), http.StatusOK, &code)
	if code.VerificationURI != pageURL {
		t.Errorf("verification_uri %q, the walkthrough opens %q", code.VerificationURI, pageURL)
	}

	// 2. Sign in with the dev sign-in (it lands on the /device page), then approve with the console cookies.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.Get(signinURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/device" || !bytes.Contains(page, []byte("<html")) {
		t.Fatalf("sign-in ended at %s with %d", resp.Request.URL, resp.StatusCode)
	}
	if !strings.Contains(string(page), signinURL) {
		t.Errorf("the /device page's sign-in link is not the dev sign-in %s", signinURL)
	}
	var csrf string
	for _, c := range jar.Cookies(resp.Request.URL) {
		if c.Name == "csrf_token" {
			csrf = c.Value
		}
	}
	if csrf == "" {
		t.Fatal("the dev sign-in set no csrf_token cookie")
	}
	approve, _ := http.NewRequest(http.MethodPost, approveURL, strings.NewReader(`{"user_code":"`+code.UserCode+`"}`))
	approve.Header.Set("Content-Type", "application/json")
	approve.Header.Set("X-CSRF-Token", csrf)
	var approved struct{ Status string }
	decode(t, do(t, browser, approve), http.StatusOK, &approved)
	if approved.Status != "approved" {
		t.Fatalf("approve: %+v", approved)
	}

	// 3. Poll for the token (the first poll is never slowed down).
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	decode(t, post(t, http.DefaultClient, tokenURL, url.Values{"client_id": {"difyctl"}, "device_code": {code.DeviceCode},
		"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}}), http.StatusOK, &tok)

	// 4. Through the shim: the demo upstream answers for the demo account and runs the chat app.
	workspaces, _ := http.NewRequest(http.MethodGet, workspacesURL, nil)
	workspaces.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	var ws struct{ Workspaces []struct{ ID string } }
	decode(t, do(t, http.DefaultClient, workspaces), http.StatusOK, &ws)
	if len(ws.Workspaces) != 1 || ws.Workspaces[0].ID != demoTenantID {
		t.Errorf("workspaces %+v, want the demo workspace", ws.Workspaces)
	}
	run, _ := http.NewRequest(http.MethodPost, appURL, strings.NewReader(runBody))
	run.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	run.Header.Set("Content-Type", "application/json")
	run.Header.Set("Accept", "text/event-stream")
	resp = do(t, http.DefaultClient, run)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var answer strings.Builder
	for _, e := range sseEvents(t, resp, body) {
		answer.WriteString(e.str("answer"))
	}
	if answer.String() != "hello" {
		t.Errorf("the chat app answered %q to the walkthrough's hello", answer.String())
	}
}

func post(t *testing.T, c *http.Client, target string, form url.Values) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, c, req)
}

func do(t *testing.T, c *http.Client, req *http.Request) *http.Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return resp
}

func decode(t *testing.T, resp *http.Response, wantStatus int, v any) {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: %d %s, want %d", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, body, wantStatus)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s: %v in %s", resp.Request.URL.Path, err, body)
	}
}

// miniredis only expires keys when its clock is moved; devstack must move it or device codes and limiter windows live for
// ever.
func TestInProcessRedisExpiresKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := inProcessRedis(t)
	if err := rdb.Set(ctx, "k", "v", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "a key with a 1 s TTL expires", func() bool {
		return rdb.Exists(ctx, "k").Val() == 0
	})
}

// The limiter's script reads Redis TIME; on miniredis that must be the wall clock, or windows never slide.
func TestInProcessRedisTimeIsTheWallClock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := inProcessRedis(t)
	got, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(got); d < -5*time.Second || d > 5*time.Second {
		t.Fatalf("Redis TIME is %v away from the wall clock", d)
	}
}

// devstack's secret key is public and /signin signs anyone in: by default nothing listens beyond this machine.
func TestDefaultsListenOnLoopbackOnly(t *testing.T) {
	o := defaultOptions()
	for _, addr := range []string{o.ShimAddr, o.DeviceflowAddr, o.ExtauthzAddr, o.AdminAddr, o.UpstreamAddr} {
		host, _, err := net.SplitHostPort(addr)
		if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsLoopback() {
			t.Errorf("default listen address %q is not a loopback address", addr)
		}
	}
}

// inProcessRedis starts devstack's miniredis with its clock-advancing loop, stopped when the test ends.
func inProcessRedis(t *testing.T) *redis.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, err := startRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}
