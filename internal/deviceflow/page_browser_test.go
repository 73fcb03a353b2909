package deviceflow

import (
	"context"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/authgate/authgate/internal/ratelimit"
)

// The /device page in a real headless Chromium: the script, the CSP and the API have to agree for these to pass.

const browserStepTimeout = 20 * time.Second

// browser is one headless Chromium and the deviceflow server it talks to.
type browser struct {
	t       *testing.T
	h       *webHarness
	baseURL string
	ctx     context.Context
	log     *pageLog
}

// pageLog collects the errors and exceptions the page reported.
type pageLog struct {
	mu      sync.Mutex
	entries []string
}

// in returns the browser reporting to t (a subtest).
func (b *browser) in(t *testing.T) *browser {
	c := *b
	c.t = t
	return &c
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (CI=true: browser tests must run); apt-get install -y chromium")
	}
	t.Skip("chromium is not installed; apt-get install -y chromium")
	return ""
}

// newBrowser starts an EE deviceflow whose console and API URLs are its own address, so redirects to the page stay in
// the test, and a headless Chromium to drive it; opts add to the server's dependencies.
func newBrowser(t *testing.T, harnessOpts ...webOption) *browser {
	t.Helper()
	exe := chromiumPath(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := "http://" + ln.Addr().String()
	h := newWebHarness(t, true, func(c *Config) { c.ConsoleWebURL, c.ConsoleAPIURL = self, self }, harnessOpts...)
	ts := httptest.NewUnstartedServer(h.handler)
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	t.Cleanup(ts.Close)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(900, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &browser{t: t, h: h, baseURL: ts.URL, ctx: ctx, log: &pageLog{}}
	// The first run starts the browser; it must not carry a deadline, or the deadline would end the browser.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx) // subscribes now, so nothing the page says later is missed
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				b.log.mu.Lock()
				b.log.entries = append(b.log.entries, m.String())
				b.log.mu.Unlock()
			}
		}
	}()
	t.Cleanup(b.checkConsole)
	return b
}

// run runs steps with a deadline, failing the test with what happened.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (page errors: %v)", what, err, b.consoleErrors())
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}

func (b *browser) consoleErrors() []string {
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	return append([]string(nil), b.log.entries...)
}

// checkConsole fails the test on any script error or CSP violation the page reported.
func (b *browser) checkConsole() {
	b.t.Helper()
	for _, m := range b.consoleErrors() {
		// A failed API call (4xx) is logged by the browser as a resource error; that is the page working as intended.
		if strings.Contains(m, "Failed to load resource") {
			continue
		}
		b.t.Errorf("page reported: %s", m)
	}
}

// signIn gives the browser the cookies of a Dify console session for the account.
func (b *browser) signIn(accountID string) {
	b.t.Helper()
	session, csrf := b.h.consoleSession(accountID)
	httpOnly, notHTTPOnly := true, false
	b.run("set session cookies", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, c := range []network.SetCookieParams{
			{Name: session.Name, Value: session.Value, URL: b.baseURL, Path: "/", HTTPOnly: &httpOnly},
			{Name: csrf.Name, Value: csrf.Value, URL: b.baseURL, Path: "/", HTTPOnly: &notHTTPOnly},
		} {
			if _, err := chromedp.Call(ctx, network.SetCookie, c); err != nil {
				return err
			}
		}
		return nil
	}))
}

func visible(id string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS("#" + id))
}

func TestDevicePageInChromium(t *testing.T) {
	b := newBrowser(t)
	h := b.h

	t.Run("signed out: chooser, then sign-in with a fixed return path and the code kept for after", func(t *testing.T) {
		b := b.in(t)
		_, userCode := h.issue()
		b.run("enter a code without a console session",
			chromedp.Navigate(b.baseURL+"/device?user_code="+userCode), visible("view-code-entry"),
			chromedp.Click(chromedp.CSS("#continue")), visible("view-chooser"), visible("choose-sso"),
			chromedp.Click(chromedp.CSS("#choose-account")))
		b.waitLocation(b.baseURL + "/signin?redirect_url=%2Fdevice")
		b.run("come back from sign-in", chromedp.Navigate(b.baseURL+"/device"), visible("view-code-entry"))
		if got := b.eval(`document.getElementById("user-code").value`); got != userCode {
			t.Errorf("after sign-in the code field holds %q, want %q", got, userCode)
		}
	})

	t.Run("SSO starts only after the code is confirmed on the page, never from a link", func(t *testing.T) {
		b := b.in(t)
		deviceCode, userCode := h.issue()
		// The fake IdP sends the browser straight back with an assertion, as an IdP where the person is signed in would.
		assertion := h.assertion("sso.user@partner.example", userCode, newSSONonce())
		h.ent.SetSSOInitiateURL(b.baseURL + "/openapi/v1/oauth/device/sso-complete?sso_assertion=" + url.QueryEscape(assertion))
		calls := h.ent.RequestCount()
		b.run("open a link to sso-initiate someone sent",
			chromedp.Navigate(b.baseURL+"/openapi/v1/oauth/device/sso-initiate?user_code="+userCode), visible("view-code-entry"))
		if got := b.eval(`location.pathname + location.search`); got != "/device" {
			t.Errorf("the link landed on %q, want the code confirmation at /device", got)
		}
		if got := b.eval(`document.getElementById("user-code").value`); got != userCode {
			t.Errorf("the link prefilled %q, want %q", got, userCode)
		}
		if n := h.ent.RequestCount(); n != calls {
			t.Fatalf("opening the link started SSO (%d enterprise calls)", n-calls)
		}
		b.run("confirm the code", chromedp.Click(chromedp.CSS("#continue")), visible("view-chooser"))
		if got := b.text("#chooser-client-id") + " / " + b.text("#chooser-device-label"); got != "difyctl / laptop" {
			t.Errorf("chooser shows %q", got)
		}
		b.run("continue with SSO", chromedp.Click(chromedp.CSS("#choose-sso")), visible("view-authorize-sso"))
		if n := h.ent.RequestCount(); n != calls+1 {
			t.Fatalf("enterprise calls = %d, want 1", n-calls)
		}
		for sel, want := range map[string]string{"#sso-email": "sso.user@partner.example", "#sso-client-id": "difyctl",
			"#sso-device-label": "laptop", "#sso-ip": "192.0.2.10", "#view-authorize-sso .js-user-code": userCode} {
			if got := b.text(sel); got != want {
				t.Errorf("%s shows %q, want %q", sel, got, want)
			}
		}
		if got := b.text("#sso-started"); !strings.Contains(got, "just now") && !strings.Contains(got, "minute") {
			t.Errorf("start time shown: %q", got)
		}
		b.screenshot("/tmp/authgate-device-authorize-sso.png")
		b.run("approve as the external subject", chromedp.Click(chromedp.CSS("#sso-approve")), visible("view-success"))
		code, body := h.poll(deviceCode)
		if tok, _ := body["access_token"].(string); code != 200 || !strings.HasPrefix(tok, "dfoe_") {
			t.Fatalf("poll after SSO approval in the browser: %d %v", code, body)
		}
	})

	b.signIn(webAccount.ID)

	t.Run("verification_uri_complete prefills, is scrubbed, and approval yields a token", func(t *testing.T) {
		b := b.in(t)
		deviceCode, userCode := h.issue()
		b.run("open the complete verification URI", chromedp.Navigate(b.baseURL+"/device?user_code="+userCode), visible("view-code-entry"))
		if got := b.eval(`location.pathname + location.search`); got != "/device" {
			t.Errorf("the URL still carries the code: %q", got)
		}
		if got := b.eval(`document.getElementById("user-code").value`); got != userCode {
			t.Errorf("prefilled %q, want %q", got, userCode)
		}
		b.run("confirm the code", chromedp.Click(chromedp.CSS("#continue")), visible("view-authorize-account"))
		if got := b.text("#account-client-id"); got != "difyctl" {
			t.Errorf("client id shown: %q", got)
		}
		if got := b.text("#account-device-label"); got != "laptop" {
			t.Errorf("device label shown: %q", got)
		}
		if got := b.text("#account-ip"); got != "192.0.2.10" {
			t.Errorf("creator IP shown: %q", got)
		}
		if got := b.text("#account-started"); !strings.Contains(got, "just now") && !strings.Contains(got, "minute") {
			t.Errorf("start time shown: %q", got)
		}
		if got := b.text("#view-authorize-account .warning"); !strings.Contains(got, "Only approve if you started this yourself, on your own device") {
			t.Errorf("warning shown: %q", got)
		}
		b.screenshot("/tmp/authgate-device-authorize.png")
		b.run("approve", chromedp.Click(chromedp.CSS("#account-approve")), visible("view-success"))

		code, body := h.poll(deviceCode)
		if tok, _ := body["access_token"].(string); code != 200 || !strings.HasPrefix(tok, "dfoa_") || body["subject_email"] != "dify.user@example.com" {
			t.Fatalf("poll after approval in the browser: %d %v", code, body)
		}
	})

	t.Run("typed code, deny", func(t *testing.T) {
		b := b.in(t)
		deviceCode, userCode := h.issue()
		typed := strings.ToLower(strings.ReplaceAll(userCode, "-", " "))
		b.run("type the code and deny",
			chromedp.Navigate(b.baseURL+"/device"), visible("view-code-entry"),
			chromedp.SendKeys(chromedp.CSS("#user-code"), typed),
			chromedp.Click(chromedp.CSS("#continue")), visible("view-authorize-account"),
			chromedp.Click(chromedp.CSS("#account-deny")), visible("view-denied"))
		if code, body := h.poll(deviceCode); code != 400 || body["error"] != codeAccessDenied {
			t.Fatalf("poll after denial in the browser: %d %v", code, body)
		}
	})

	t.Run("unknown or expired code", func(t *testing.T) {
		b := b.in(t)
		b.run("enter an unknown code",
			chromedp.Navigate(b.baseURL+"/device"), visible("view-code-entry"),
			chromedp.SendKeys(chromedp.CSS("#user-code"), "BBBB-BBBB"),
			chromedp.Click(chromedp.CSS("#continue")), visible("view-expired"),
			chromedp.Click(chromedp.CSS("#view-expired .js-restart")), visible("view-code-entry"))
	})

	t.Run("SSO branch", func(t *testing.T) {
		b := b.in(t)
		deviceCode, userCode := h.issue()
		assertion := h.assertion("ext.user@partner.example", userCode, newSSONonce())
		b.run("come back from the IdP",
			chromedp.Navigate(b.baseURL+"/openapi/v1/oauth/device/sso-complete?sso_assertion="+url.QueryEscape(assertion)),
			visible("view-authorize-sso"))
		if got := b.eval(`location.pathname + location.search`); got != "/device" {
			t.Errorf("the URL still carries parameters: %q", got)
		}
		if got := b.text("#sso-email"); got != "ext.user@partner.example" {
			t.Errorf("subject shown: %q", got)
		}
		if got := b.text("#view-authorize-sso .js-user-code"); got != userCode {
			t.Errorf("code shown: %q", got)
		}
		if got := b.text("#sso-client-id") + " / " + b.text("#sso-device-label") + " / " + b.text("#sso-ip"); got != "difyctl / laptop / 192.0.2.10" {
			t.Errorf("device context shown: %q", got)
		}
		b.run("approve as the external subject", chromedp.Click(chromedp.CSS("#sso-approve")), visible("view-success"))
		code, body := h.poll(deviceCode)
		if tok, _ := body["access_token"].(string); code != 200 || !strings.HasPrefix(tok, "dfoe_") {
			t.Fatalf("poll after SSO approval in the browser: %d %v", code, body)
		}
	})

	t.Run("SSO error from the fixed table", func(t *testing.T) {
		b := b.in(t)
		b.run("open the page with an sso_error",
			chromedp.Navigate(b.baseURL+"/device?sso_error="+codeEmailIsDifyAccount), visible("view-sso-error"))
		if got := b.text("#sso-error-message"); got != ssoErrorMessages[codeEmailIsDifyAccount] {
			t.Errorf("message: %q", got)
		}
		if got := b.eval(`location.search`); got != "" {
			t.Errorf("the URL still carries parameters: %q", got)
		}
	})

	t.Run("rate limited", func(t *testing.T) {
		b := b.in(t)
		// Spend this client's lookup budget (60 per 5 minutes) as a burst of earlier lookups would.
		limiter := ratelimit.NewSlidingWindow(h.rdb)
		for i := 0; ; i++ {
			d, err := limiter.Allow(context.Background(), limitLookup.prefix+"127.0.0.1", limitLookup.n, limitLookup.window)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Allowed {
				break
			}
			if i > limitLookup.n {
				t.Fatal("the lookup limit never tripped")
			}
		}
		_, userCode := h.issue()
		b.run("look up over the limit",
			chromedp.Navigate(b.baseURL+"/device"), visible("view-code-entry"),
			chromedp.SendKeys(chromedp.CSS("#user-code"), userCode),
			chromedp.Click(chromedp.CSS("#continue")), visible("view-rate-limited"))
	})
}

// waitLocation waits for a navigation the page started itself to arrive at want.
func (b *browser) waitLocation(want string) {
	b.t.Helper()
	deadline := time.Now().Add(browserStepTimeout)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
		got, err := chromedp.Run(ctx, chromedp.Location())
		cancel()
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("location = %q (%v), want %q", got, err, want)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a bounded wait for an outcome
	}
}

// screenshot saves the current view for a human to look at; it is not an assertion.
func (b *browser) screenshot(path string) {
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot: %v", err)
	}
}
