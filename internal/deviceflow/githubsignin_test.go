package deviceflow

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/github"
	"github.com/authgate/authgate/internal/github/githubtest"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
)

// Dify accounts and GitHub users of the GitHub branch's tests.
var (
	ghLin     = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a1", Email: "lin@corp.example", Name: "Lin", Status: directory.AccountStatusActive}
	ghPub     = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a2", Email: "pub@corp.example", Name: "Pub", Status: directory.AccountStatusActive}
	ghHidden  = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a3", Email: "Hidden@Corp.example", Name: "Hidden", Status: directory.AccountStatusActive}
	ghSecond  = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a4", Email: "second@corp.example", Name: "Second", Status: directory.AccountStatusActive}
	ghUnver   = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a5", Email: "unverified@corp.example", Name: "Unverified", Status: directory.AccountStatusActive}
	ghNoreply = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a6", Email: "1006+nr@users.noreply.github.com", Name: "Noreply", Status: directory.AccountStatusActive}
	ghBanned  = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a7", Email: "banned@corp.example", Name: "Banned", Status: directory.AccountStatusBanned}
	ghNew     = directory.Account{ID: "7c000000-0000-4000-8000-0000000000a8", Email: "new@corp.example", Name: "New", Status: "uninitialized"}

	ghFixture = dirfixture.Fixture{
		Accounts: []directory.Account{ghLin, ghPub, ghHidden, ghSecond, ghUnver, ghNoreply, ghBanned, ghNew},
		Integrates: []dirfixture.Integrate{
			{AccountID: ghLin.ID, Provider: directory.ProviderGitHub, OpenID: "1001"},
			{AccountID: ghBanned.ID, Provider: directory.ProviderGitHub, OpenID: "1009"},
			{AccountID: ghPub.ID, Provider: "google", OpenID: "1007"}, // another provider's id: no link for GitHub user 1007
		},
	}

	verified = func(addr string) github.Email { return github.Email{Email: addr, Verified: true} }
	primary  = func(e github.Email) github.Email { e.Primary = true; return e }

	// linkedUser is linked to Lin, and also holds Pub's address: the link wins.
	linkedUser = githubtest.Account{ID: 1001, Login: "lin-gh", Email: "pub@corp.example",
		Emails: []github.Email{primary(verified("pub@corp.example"))}}
	publicUser = githubtest.Account{ID: 1002, Login: "pub-gh", Email: "PUB@corp.example",
		Emails: []github.Email{primary(verified("other@corp.example")), verified("PUB@corp.example")}}
	hiddenUser = githubtest.Account{ID: 1003, Login: "hidden-gh", Emails: []github.Email{
		verified("1003+hidden-gh@users.noreply.github.com"), primary(verified("hidden@corp.example"))}}
	secondaryUser = githubtest.Account{ID: 1004, Login: "second-gh", Emails: []github.Email{
		primary(github.Email{Email: "unverified@corp.example"}), verified("second@corp.example")}}
	unverifiedUser = githubtest.Account{ID: 1005, Login: "unver-gh", Email: "unverified@corp.example",
		Emails: []github.Email{primary(github.Email{Email: "unverified@corp.example"})}}
	noreplyUser  = githubtest.Account{ID: 1006, Login: "nr", Emails: []github.Email{primary(verified("1006+nr@users.noreply.github.com"))}}
	strangerUser = githubtest.Account{ID: 1007, Login: "stranger", Email: "stranger@elsewhere.example",
		Emails: []github.Email{primary(verified("stranger@elsewhere.example"))}}
	bannedUser     = githubtest.Account{ID: 1008, Login: "banned-gh", Emails: []github.Email{primary(verified("banned@corp.example"))}}
	bannedLinked   = githubtest.Account{ID: 1009, Login: "banned-linked"}
	uninitialUser  = githubtest.Account{ID: 1010, Login: "new-gh", Emails: []github.Email{primary(verified("new@corp.example"))}}
	lookalikeUser  = githubtest.Account{ID: 1011, Login: "kelvin", Emails: []github.Email{primary(verified("lin@corp.exampl\u212a"))}}
	linkedNoEmails = githubtest.Account{ID: 1001, Login: "lin-gh"} // Lin's GitHub user with no address at all
)

// githubHarness is a deviceflow with GitHub sign-in on, against a fake GitHub.
type githubHarness struct {
	*webHarness
	gh *githubtest.Server
}

// newGitHubHarness starts one; tweak adjusts the GitHub client's configuration (timeouts).
func newGitHubHarness(t *testing.T, tweak func(*github.Config), cfgTweak func(*Config)) *githubHarness {
	t.Helper()
	gh := githubtest.NewServer(t)
	h := newWebHarness(t, false, cfgTweak, withGitHub(t, gh, tweak))
	t.Cleanup(func() { noCredentialLogged(t, h, gh) })
	return &githubHarness{webHarness: h, gh: gh}
}

// withGitHub turns GitHub sign-in on against the fake gh, and seeds the GitHub branch's accounts and links.
func withGitHub(t *testing.T, gh *githubtest.Server, tweak func(*github.Config)) webOption {
	return func(d *Deps, pool *pgxpool.Pool) {
		testenv.SeedDirectory(t, pool, ghFixture)
		c := gh.Config()
		if tweak != nil {
			tweak(&c)
		}
		d.GitHub = github.New(c)
	}
}

// noCredentialLogged: none of the GitHub access tokens the fake issued, nor the client secret, nor any cookie value or code
// of the flow, appears in deviceflow's logs.
func noCredentialLogged(t *testing.T, h *webHarness, gh *githubtest.Server) {
	t.Helper()
	logs := h.logs.String()
	secrets := append(gh.IssuedTokens(), gh.ClientSecret)
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a GitHub credential (%.8s...) appears in the logs", s)
		}
	}
	for _, m := range regexp.MustCompile(`(?:code|state|code_verifier)=([A-Za-z0-9_-]{20,})`).FindAllStringSubmatch(logs, -1) {
		t.Errorf("the logs carry an OAuth parameter: %s", m[0])
	}
}

// pageState loads /device as the browser does and returns the start-state cookie and the nonce the page embeds.
func (h *githubHarness) pageState() (*http.Cookie, string) {
	h.t.Helper()
	rec := h.do("GET", "/device", nil, nil)
	m := regexp.MustCompile(`data-sso-state="([^"]+)"`).FindStringSubmatch(rec.Body.String())
	c := cookieNamed(rec, ssoStartStateCookieName)
	if m == nil || c == nil {
		h.t.Fatalf("the page set no start state (cookie %v)", c)
	}
	return c, m[1]
}

// start starts a GitHub sign-in for userCode from the page: GitHub's authorization URL and the state cookie.
func (h *githubHarness) start(userCode string) (string, *http.Cookie) {
	h.t.Helper()
	c, nonce := h.pageState()
	rec := h.do("POST", "/openapi/v1/oauth/device/github/start", map[string]string{"user_code": userCode, "state": nonce}, nil, c)
	var out struct{ URL string }
	decodeInto(h.t, rec, &out)
	state := cookieNamed(rec, githubStateCookieName)
	if rec.Code != http.StatusOK || out.URL == "" || state == nil || state.Value == "" {
		h.t.Fatalf("github start: %d %s", rec.Code, rec.Body)
	}
	return out.URL, state
}

// authorize is the browser at GitHub: it returns the callback target (path and query) GitHub redirects back to.
func (h *githubHarness) authorize(authorizeURL string) string {
	h.t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authorizeURL)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	target, ok := strings.CutPrefix(loc, h.cfg.ConsoleWebURL)
	if resp.StatusCode != http.StatusFound || !ok || !strings.HasPrefix(target, githubCallbackPath+"?") {
		h.t.Fatalf("GitHub sent the browser to %q (%d)", loc, resp.StatusCode)
	}
	return target
}

// callback is GitHub's redirect arriving at deviceflow; it returns the answer and where it sends the browser.
func (h *githubHarness) callback(target string, cookies ...*http.Cookie) (*httptest.ResponseRecorder, string) {
	h.t.Helper()
	rec := h.do("GET", target, nil, nil, cookies...)
	if rec.Code != http.StatusFound {
		h.t.Fatalf("callback: %d %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		h.t.Errorf("callback Cache-Control %q", got)
	}
	loc, _ := strings.CutPrefix(rec.Header().Get("Location"), h.cfg.ConsoleWebURL)
	return rec, loc
}

// signIn runs a whole GitHub sign-in as who for userCode and returns where the browser lands and the session cookie (nil
// when refused).
func (h *githubHarness) signIn(userCode string, who githubtest.Account) (string, *http.Cookie) {
	h.t.Helper()
	h.gh.SignInAs(who)
	authorizeURL, state := h.start(userCode)
	rec, loc := h.callback(h.authorize(authorizeURL), state)
	return loc, cookieNamed(rec, githubSessionCookieName)
}

// githubContext reads what the page shows for a GitHub session.
func (h *githubHarness) githubContext(session *http.Cookie) (int, githubContextJSON) {
	h.t.Helper()
	rec := h.do("GET", "/openapi/v1/oauth/device/github/context", nil, nil, session)
	var out githubContextJSON
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}

// resolve approves or denies through the account branch's endpoint with a GitHub session and its CSRF token.
func (h *githubHarness) resolve(action, userCode string, session *http.Cookie, csrf string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.do("POST", "/openapi/v1/oauth/device/"+action, map[string]string{"user_code": userCode}, csrfHeaderOf(csrf), session)
}

// wantPending asserts nothing was approved: the CLI's poll is still told to wait.
func (h *githubHarness) wantPending(deviceCode string) {
	h.t.Helper()
	h.wantPendingIn(h.t, deviceCode)
}

func TestGitHubSignInMatchesAccounts(t *testing.T) {
	h := newGitHubHarness(t, nil, nil)
	approved := []struct {
		name string
		who  githubtest.Account
		want directory.Account
	}{
		{"linked account by GitHub id (the link wins over an email of another account)", linkedUser, ghLin},
		{"linked account, with no email at all on GitHub", linkedNoEmails, ghLin},
		{"public profile email, matched with the branches' email folding", publicUser, ghPub},
		{"hidden email resolved from /user/emails (primary verified)", hiddenUser, ghHidden},
		{"only a non-primary verified email (the primary is unverified)", secondaryUser, ghSecond},
	}
	for _, c := range approved {
		t.Run(c.name, func(t *testing.T) {
			deviceCode, userCode := h.issue()
			loc, session := h.signIn(userCode, c.who)
			if loc != "/device?github_verified=1" || session == nil || session.Value == "" {
				t.Fatalf("signed in to %q with session %v", loc, session)
			}
			if !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/openapi/v1/oauth/device" ||
				session.MaxAge != 300 || session.Secure {
				t.Errorf("session cookie attributes %+v", session)
			}
			h.wantPending(deviceCode) // signing in approves nothing by itself
			status, ctx := h.githubContext(session)
			if status != http.StatusOK || ctx.AccountEmail != c.want.Email || ctx.GitHubLogin != c.who.Login ||
				ctx.UserCode != userCode || ctx.ClientID != "difyctl" || ctx.DeviceLabel != "laptop" ||
				ctx.CreatorIP != "192.0.2.10" || ctx.CSRFToken == "" || ctx.CreatedAt == "" {
				t.Fatalf("context: %d %+v", status, ctx)
			}
			rec := h.resolve("approve", userCode, session, ctx.CSRFToken)
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"approved"`) {
				t.Fatalf("approve: %d %s", rec.Code, rec.Body)
			}
			if c := cookieNamed(rec, githubSessionCookieName); c == nil || c.MaxAge >= 0 {
				t.Errorf("the approval did not clear the GitHub session: %+v", c)
			}
			code, body := h.poll(deviceCode)
			tok, _ := body["access_token"].(string)
			acct, _ := body["account"].(map[string]any)
			if code != http.StatusOK || !strings.HasPrefix(tok, "dfoa_") || acct["id"] != c.want.ID ||
				body["subject_email"] != strings.ToLower(c.want.Email) {
				t.Fatalf("poll: %d %v; want a dfoa_ token for %s", code, body, c.want.Email)
			}
		})
	}
	if len(h.gh.IssuedTokens()) < len(approved) {
		t.Fatal("GitHub issued fewer access tokens than sign-ins: the log check would prove nothing")
	}
	if !strings.Contains(h.logs.String(), `"via":"github"`) || h.logs.Count(`"event":"oauth.device_approved"`) != len(approved) {
		t.Errorf("want %d oauth.device_approved events with via github; logs:\n%s", len(approved), h.logs)
	}

	refused := []struct {
		name   string
		who    githubtest.Account
		reason string
	}{
		{"only unverified emails (one of them a Dify account's)", unverifiedUser, githubErrNoEmail},
		{"only a noreply address (even one a Dify account holds)", noreplyUser, githubErrNoEmail},
		{"no Dify account for the verified email (nor a GitHub link)", strangerUser, githubErrNoAccount},
		{"an email that only folds like Unicode onto an account's", lookalikeUser, githubErrNoAccount},
		{"banned account by email", bannedUser, githubErrInactive},
		{"banned account by link", bannedLinked, githubErrInactive},
		{"uninitialised account", uninitialUser, githubErrInactive},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			deviceCode, userCode := h.issue()
			loc, session := h.signIn(userCode, c.who)
			if loc != "/device?github_error="+c.reason || session != nil {
				t.Fatalf("landed on %q with session %v; want github_error=%s and no session", loc, session, c.reason)
			}
			h.wantPending(deviceCode)
			page := h.do("GET", loc, nil, nil).Body.String()
			if !strings.Contains(page, githubErrorMessages[c.reason]) || !strings.Contains(page, `data-github-error="true"`) {
				t.Errorf("the page does not explain %s", c.reason)
			}
		})
	}
	if n := h.logs.Count(`"event":"oauth.device_flow_rejected"`); n < len(refused) {
		t.Errorf("want each refusal audited, got %d events", n)
	}
}

// On another GitHub than github.com (GitHub Enterprise Server), user ids are that instance's numbering, while Dify's links
// hold github.com's: its user 1001 is not the github.com user 1001 whom Lin's account is linked to, so only the verified
// email matches.
func TestGitHubEnterpriseUsersAreMatchedByEmailOnly(t *testing.T) {
	h := newGitHubHarness(t, func(c *github.Config) { c.Enterprise = true }, nil)
	for _, c := range []struct {
		who  githubtest.Account
		want string // the account approved as, or the github_error
	}{
		{linkedUser, ghPub.Email},          // 1001 (Lin's link on github.com), with Pub's verified address
		{linkedNoEmails, githubErrNoEmail}, // 1001 without an address: no match at all
		{bannedLinked, githubErrNoEmail},   // 1009, linked to the banned account on github.com
	} {
		deviceCode, userCode := h.issue()
		loc, session := h.signIn(userCode, c.who)
		if session == nil {
			if loc != "/device?github_error="+c.want {
				t.Errorf("GitHub Enterprise user %d landed on %q, want %s", c.who.ID, loc, c.want)
			}
			h.wantPending(deviceCode)
			continue
		}
		if _, ctx := h.githubContext(session); ctx.AccountEmail != c.want {
			t.Errorf("GitHub Enterprise user %d signed in as %q, want %s", c.who.ID, ctx.AccountEmail, c.want)
		}
	}
}

func TestGitHubCallbackRefusals(t *testing.T) {
	h := newGitHubHarness(t, func(c *github.Config) { c.Timeout = 300 * time.Millisecond }, nil)
	h.gh.SignInAs(hiddenUser)

	t.Run("state not this browser's", func(t *testing.T) {
		_, otherCode := h.issue()
		_, otherState := h.start(otherCode) // another sign-in's cookie
		for _, cookies := range [][]*http.Cookie{nil, {otherState}, {{Name: githubStateCookieName, Value: ""}}} {
			// Someone starts a sign-in for their own code and sends GitHub's authorization URL to a person, whose GitHub
			// (the app authorized before) returns that person's browser here at once, with a code for their GitHub user.
			deviceCode, userCode := h.issue()
			authorizeURL, state := h.start(userCode)
			target := h.authorize(authorizeURL)
			if rec, loc := h.callback(target, cookies...); loc != "/device?github_error="+githubErrState ||
				cookieNamed(rec, githubSessionCookieName) != nil {
				t.Fatalf("cookies %v: landed on %q", cookies, loc)
			}
			// Should that URL leak (history, a pasted link, a log), the browser that started the sign-in, which holds its
			// state cookie, cannot finish it: it would be signed in as the person who was sent the link.
			tokens := len(h.gh.IssuedTokens())
			if rec, loc := h.callback(target, state); loc != "/device?github_error="+githubErrState ||
				cookieNamed(rec, githubSessionCookieName) != nil {
				t.Fatalf("cookies %v, then the starting browser: landed on %q", cookies, loc)
			}
			if len(h.gh.IssuedTokens()) != tokens {
				t.Error("a callback of a dead sign-in reached GitHub")
			}
			h.wantPending(deviceCode)
		}
		// A state in the URL that is not the cookie's ends only the sign-in the URL names, never the cookie's.
		deviceCode, userCode := h.issue()
		authorizeURL, state := h.start(userCode)
		target := h.authorize(authorizeURL)
		tampered := strings.Replace(target, "state=", "state=x", 1)
		if _, loc := h.callback(tampered, state); loc != "/device?github_error="+githubErrState {
			t.Fatalf("another state in the URL: landed on %q", loc)
		}
		h.wantPending(deviceCode)
		if rec, loc := h.callback(target, state); loc != "/device?github_verified=1" || cookieNamed(rec, githubSessionCookieName) == nil {
			t.Fatalf("the genuine callback after a tampered one: %q", loc)
		}
	})

	t.Run("replayed state", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		authorizeURL, state := h.start(userCode)
		target := h.authorize(authorizeURL)
		rec, loc := h.callback(target, state)
		if loc != "/device?github_verified=1" {
			t.Fatalf("first callback: %q", loc)
		}
		if c := cookieNamed(rec, githubStateCookieName); c == nil || c.MaxAge >= 0 {
			t.Errorf("the state cookie was not cleared: %+v", c)
		}
		tokens := len(h.gh.IssuedTokens())
		rec, loc = h.callback(target, state)
		if loc != "/device?github_error="+githubErrState || cookieNamed(rec, githubSessionCookieName) != nil {
			t.Fatalf("replay: landed on %q", loc)
		}
		if len(h.gh.IssuedTokens()) != tokens {
			t.Error("a replayed state reached GitHub")
		}
		h.wantPending(deviceCode)
	})

	t.Run("expired state", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		authorizeURL, state := h.start(userCode)
		target := h.authorize(authorizeURL)
		u, _ := url.Parse(target)
		h.rdb.Del(context.Background(), githubStateKey(u.Query().Get("state"))) // as if its 10 minutes had passed
		if _, loc := h.callback(target, state); loc != "/device?github_error="+githubErrState {
			t.Fatalf("expired: landed on %q", loc)
		}
		h.wantPending(deviceCode)
	})

	// The fake token endpoint checks the verifier against the authorization request's challenge, as GitHub does.
	for _, verifier := range []string{"", newOAuthSecret()} {
		t.Run("PKCE verifier missing or not the challenge's ("+map[bool]string{true: "missing", false: "wrong"}[verifier == ""]+")", func(t *testing.T) {
			deviceCode, userCode := h.issue()
			authorizeURL, state := h.start(userCode)
			target := h.authorize(authorizeURL)
			u, _ := url.Parse(target)
			key := githubStateKey(u.Query().Get("state"))
			record, _ := json.Marshal(githubStart{UserCode: userCode, Verifier: verifier})
			if err := h.rdb.Set(context.Background(), key, record, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			before := len(h.gh.IssuedTokens())
			if _, loc := h.callback(target, state); loc != "/device?github_error="+githubErrUnavailable {
				t.Fatalf("landed on %q", loc)
			}
			if len(h.gh.IssuedTokens()) != before {
				t.Fatal("GitHub issued a token without the right verifier")
			}
			h.wantPending(deviceCode)
		})
	}

	t.Run("the person cancels at GitHub", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		authorizeURL, state := h.start(userCode)
		h.gh.DenyAuthorization()
		defer h.gh.SignInAs(hiddenUser)
		if _, loc := h.callback(h.authorize(authorizeURL), state); loc != "/device?github_error="+githubErrDenied {
			t.Fatalf("landed on %q", loc)
		}
		h.wantPending(deviceCode)
	})

	faults := []struct {
		endpoint string
		fault    githubtest.Fault
	}{
		{githubtest.Token, githubtest.Fault{Status: http.StatusInternalServerError}},
		{githubtest.Token, githubtest.Fault{Status: http.StatusOK, Body: `{"error":"bad_verification_code"}`}},
		{githubtest.User, githubtest.Fault{Status: http.StatusBadGateway}},
		{githubtest.User, githubtest.Fault{Status: http.StatusUnauthorized, Body: `{"message":"Bad credentials"}`}},
		{githubtest.Emails, githubtest.Fault{Status: http.StatusForbidden}},
		{githubtest.Token, githubtest.Fault{Hang: true}},
		{githubtest.User, githubtest.Fault{Hang: true}},
		{githubtest.Emails, githubtest.Fault{Hang: true}},
	}
	for _, f := range faults {
		name := f.endpoint + " " + map[bool]string{true: "times out", false: "answers " + http.StatusText(f.fault.Status)}[f.fault.Hang]
		t.Run(name, func(t *testing.T) {
			deviceCode, userCode := h.issue()
			authorizeURL, state := h.start(userCode)
			target := h.authorize(authorizeURL)
			h.gh.SetFault(f.endpoint, f.fault)
			defer h.gh.ClearFaults()
			began := time.Now()
			rec, loc := h.callback(target, state)
			if loc != "/device?github_error="+githubErrUnavailable || cookieNamed(rec, githubSessionCookieName) != nil {
				t.Fatalf("landed on %q", loc)
			}
			if took := time.Since(began); took > githubSignInTimeout {
				t.Errorf("the callback took %v", took)
			}
			h.wantPending(deviceCode)
		})
	}

	t.Run("the code was resolved while the person was at GitHub", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		authorizeURL, state := h.start(userCode)
		target := h.authorize(authorizeURL)
		session, csrf := h.consoleSession(webAccount.ID)
		if rec := h.do("POST", "/openapi/v1/oauth/device/deny", map[string]string{"user_code": userCode},
			csrfHeaderOf(csrf.Value), session, csrf); rec.Code != http.StatusOK {
			t.Fatalf("deny: %d %s", rec.Code, rec.Body)
		}
		if _, loc := h.callback(target, state); loc != "/device?github_error="+githubErrCodeNotPending {
			t.Fatalf("landed on %q", loc)
		}
		if code, body := h.poll(deviceCode); code != http.StatusBadRequest || body["error"] != codeAccessDenied {
			t.Fatalf("poll: %d %v", code, body)
		}
	})
}

func TestGitHubStartChecks(t *testing.T) {
	h := newGitHubHarness(t, nil, nil)
	_, userCode := h.issue()
	c, nonce := h.pageState()
	start := func(body map[string]string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
		return h.do("POST", "/openapi/v1/oauth/device/github/start", body, nil, cookies...)
	}
	wantError(t, start(map[string]string{"user_code": userCode, "state": nonce}), http.StatusForbidden, codeCSRFInvalid)
	wantError(t, start(map[string]string{"user_code": userCode, "state": "x" + nonce}, c), http.StatusForbidden, codeCSRFInvalid)
	wantError(t, start(map[string]string{"user_code": "nope", "state": nonce}, c), http.StatusBadRequest, codeInvalidUserCode)
	wantError(t, start(map[string]string{"user_code": "BBBB-BBBB", "state": nonce}, c), http.StatusNotFound, codeExpiredOrUnknown)
	if n := h.gh.Requests(githubtest.Authorize) + h.gh.Requests(githubtest.Token); n != 0 {
		t.Fatalf("refused starts reached GitHub %d times", n)
	}

	rec := start(map[string]string{"user_code": strings.ToLower(userCode), "state": nonce}, c)
	var out struct{ URL string }
	decodeInto(t, rec, &out)
	u, err := url.Parse(out.URL)
	if rec.Code != http.StatusOK || err != nil || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("start: %d %s", rec.Code, rec.Body)
	}
	q := u.Query()
	if u.Scheme+"://"+u.Host+u.Path != h.gh.OAuthURL()+"/login/oauth/authorize" || q.Get("client_id") != h.gh.ClientID ||
		q.Get("redirect_uri") != "http://console.example/device/github/callback" || q.Get("scope") != "read:user user:email" ||
		q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || len(q.Get("state")) < 43 {
		t.Fatalf("authorization URL %s", out.URL)
	}
	if strings.Contains(out.URL, h.gh.ClientSecret) {
		t.Fatal("the client secret went to the browser")
	}
	state := cookieNamed(rec, githubStateCookieName)
	if state == nil || state.Value != q.Get("state") || !state.HttpOnly || state.SameSite != http.SameSiteLaxMode ||
		state.Path != githubCallbackPath || state.MaxAge != 600 {
		t.Fatalf("state cookie %+v", state)
	}
	// The verifier stays on the server: the browser sees only its challenge.
	var stored githubStart
	raw, err := h.rdb.Get(context.Background(), githubStateKey(state.Value)).Bytes()
	if err != nil || json.Unmarshal(raw, &stored) != nil || stored.UserCode != userCode ||
		pkceChallenge(stored.Verifier) != q.Get("code_challenge") || strings.Contains(out.URL, stored.Verifier) {
		t.Fatalf("stored start %+v, %v", stored, err)
	}

	// A resolved code cannot be signed in for.
	session, csrf := h.consoleSession(webAccount.ID)
	h.do("POST", "/openapi/v1/oauth/device/approve", map[string]string{"user_code": userCode}, csrfHeaderOf(csrf.Value), session, csrf)
	wantError(t, start(map[string]string{"user_code": userCode, "state": nonce}, c), http.StatusConflict, codeUserCodeNotPending)

	// https: the GitHub cookies are Secure.
	secure := newGitHubHarness(t, nil, func(c *Config) { c.ConsoleWebURL, c.ConsoleAPIURL = "https://console.example", "https://api.example" })
	_, code := secure.issue()
	if _, st := secure.start(code); !st.Secure {
		t.Error("the state cookie of an https page is not Secure")
	}
}

func TestGitHubApprovalIsTheAccountBranch(t *testing.T) {
	h := newGitHubHarness(t, nil, func(c *Config) { c.ApprovePerHour = 4 })

	t.Run("CSRF, code binding, session", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		_, session := h.signIn(userCode, hiddenUser)
		_, ctx := h.githubContext(session)
		wantError(t, h.resolve("approve", userCode, session, ""), http.StatusForbidden, codeCSRFInvalid)
		wantError(t, h.resolve("approve", userCode, session, ctx.CSRFToken+"x"), http.StatusForbidden, codeCSRFInvalid)
		_, otherCode := h.issue()
		wantError(t, h.resolve("approve", otherCode, session, ctx.CSRFToken), http.StatusBadRequest, codeUserCodeMismatch)
		forged := *session
		forged.Value = session.Value[:len(session.Value)-3] + "abc"
		wantError(t, h.resolve("approve", userCode, &forged, ctx.CSRFToken), http.StatusUnauthorized, codeLoginRequired)
		// Another envelope signed with the same key cannot stand in for the session.
		grant, _, err := h.srv.envelopes().signGrant("http://api.example", "x@y.example", "idp", userCode)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, h.resolve("approve", userCode, &http.Cookie{Name: githubSessionCookieName, Value: grant}, ctx.CSRFToken),
			http.StatusUnauthorized, codeLoginRequired)
		// The session cookie is read from its cookie only.
		wantError(t, h.do("POST", "/openapi/v1/oauth/device/approve", map[string]string{"user_code": userCode},
			http.Header{"X-Csrf-Token": {ctx.CSRFToken}, "Authorization": {"Bearer " + session.Value}}),
			http.StatusUnauthorized, codeLoginRequired)
		h.wantPending(deviceCode)
		// Deny works the same way.
		if rec := h.resolve("deny", userCode, session, ctx.CSRFToken); rec.Code != http.StatusOK {
			t.Fatalf("deny: %d %s", rec.Code, rec.Body)
		}
		if code, body := h.poll(deviceCode); code != http.StatusBadRequest || body["error"] != codeAccessDenied {
			t.Fatalf("poll after deny: %d %v", code, body)
		}
		if !strings.Contains(h.logs.String(), `"msg":"oauth.device_denied"`) {
			t.Error("the denial was not audited")
		}
	})

	t.Run("the account's approval limit is shared with the console branch", func(t *testing.T) {
		// The limit is per account (4 here; the GitHub session spent two above, on the mismatched code and the denial): two
		// answers to the console session of the same account spend the rest.
		console, csrf := h.consoleSession(ghHidden.ID)
		for range 2 {
			wantError(t, h.do("POST", "/openapi/v1/oauth/device/approve", map[string]string{"user_code": "BBBB-BBBB"},
				csrfHeaderOf(csrf.Value), console, csrf), http.StatusNotFound, codeExpiredOrUnknown)
		}
		deviceCode, userCode := h.issue()
		_, session := h.signIn(userCode, hiddenUser)
		_, ctx := h.githubContext(session)
		rec := h.resolve("approve", userCode, session, ctx.CSRFToken)
		wantError(t, rec, http.StatusTooManyRequests, codeRateLimited)
		h.wantPending(deviceCode)
	})

	t.Run("an account banned after signing in cannot approve", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		_, session := h.signIn(userCode, secondaryUser)
		_, ctx := h.githubContext(session)
		banned := ghSecond
		banned.Status = directory.AccountStatusBanned
		testenv.SeedDirectory(t, h.pool, dirfixture.Fixture{Accounts: []directory.Account{banned}})
		if status, _ := h.githubContext(session); status != http.StatusForbidden {
			t.Errorf("context for a banned account: %d", status)
		}
		wantError(t, h.resolve("approve", userCode, session, ctx.CSRFToken), http.StatusForbidden, codeAccountInactive)
		h.wantPending(deviceCode)
	})

	t.Run("a console session still approves as before, and wins over a GitHub session", func(t *testing.T) {
		deviceCode, userCode := h.issue()
		_, ghSession := h.signIn(userCode, publicUser)
		console, csrf := h.consoleSession(webAccount.ID)
		if rec := h.do("POST", "/openapi/v1/oauth/device/approve", map[string]string{"user_code": userCode},
			csrfHeaderOf(csrf.Value), console, csrf, ghSession); rec.Code != http.StatusOK {
			t.Fatalf("approve: %d %s", rec.Code, rec.Body)
		}
		if _, body := h.poll(deviceCode); body["subject_email"] != "dify.user@example.com" {
			t.Fatalf("approved as %v, want the console session's account", body["subject_email"])
		}
	})
}

func TestGitHubSignInIsOffUnlessConfigured(t *testing.T) {
	h := newWebHarness(t, false, nil)
	for _, c := range []struct{ method, path string }{
		{"POST", "/openapi/v1/oauth/device/github/start"},
		{"GET", "/openapi/v1/oauth/device/github/context"},
		{"GET", "/device/github/callback?code=x&state=y"},
	} {
		wantError(t, h.do(c.method, c.path, nil, nil), http.StatusNotFound, codeNotFound)
	}
	page := h.do("GET", "/device?github_error="+githubErrNoAccount, nil, nil).Body.String()
	if strings.Contains(page, `id="choose-github"`) || !strings.Contains(page, `data-github="false"`) ||
		strings.Contains(page, githubErrorMessages[githubErrNoAccount]) {
		t.Error("a page without GitHub sign-in offers it or shows its errors")
	}
	if rec := h.do("GET", "/device", nil, nil); cookieNamed(rec, ssoStartStateCookieName) != nil {
		t.Error("a CE page without GitHub sign-in sets a start state")
	}
	// A GitHub session cookie means nothing when GitHub sign-in is off.
	value, err := h.srv.envelopes().signGitHubSession(webAccount.ID, "octo", "BCDF-GHJK")
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, h.do("POST", "/openapi/v1/oauth/device/approve", map[string]string{"user_code": "BCDF-GHJK"},
		nil, &http.Cookie{Name: githubSessionCookieName, Value: value}), http.StatusUnauthorized, codeLoginRequired)
}

func TestDevicePageGitHubErrorsComeFromAFixedTable(t *testing.T) {
	h := newGitHubHarness(t, nil, nil)
	page := h.do("GET", "/device", nil, nil).Body.String()
	if !strings.Contains(page, `id="choose-github"`) || !strings.Contains(page, `data-github="true"`) ||
		!strings.Contains(page, `id="view-authorize-github"`) || !strings.Contains(page, `id="view-github-error"`) {
		t.Error("the page does not offer GitHub sign-in")
	}
	for reason, msg := range githubErrorMessages {
		if page := h.do("GET", "/device?github_error="+reason, nil, nil).Body.String(); !strings.Contains(page, msg) {
			t.Errorf("github_error=%s: message missing", reason)
		}
	}
	injected := `<img src=x onerror=alert(1)>Call +1-555-SCAM`
	page = h.do("GET", "/device?github_error="+url.QueryEscape(injected), nil, nil).Body.String()
	if strings.Contains(page, "SCAM") || strings.Contains(page, "onerror") || !strings.Contains(page, githubErrorGeneric) {
		t.Error("an unknown github_error must show the generic line and nothing of the parameter")
	}
	if page := h.do("GET", "/device?github_verified=1", nil, nil).Body.String(); !strings.Contains(page, `data-github-verified="true"`) {
		t.Error("github_verified not passed to the script")
	}
}

// The whole GitHub branch in a real browser: code entry, GitHub sign-in (the fake's authorize endpoint sends the browser
// straight back, as GitHub does for a person who already authorized the app), the approval screen, approve, and the CLI's
// poll receives a dfoa_ token for the account GitHub's hidden email matched.
func TestDevicePageGitHubSignInInChromium(t *testing.T) {
	gh := githubtest.NewServer(t)
	b := newBrowser(t, withGitHub(t, gh, nil))
	h := b.h
	t.Cleanup(func() { noCredentialLogged(t, h, gh) })

	t.Run("code entry, GitHub sign-in, approve, token", func(t *testing.T) {
		b := b.in(t)
		gh.SignInAs(hiddenUser)
		deviceCode, userCode := h.issue()
		b.run("enter the code and sign in with GitHub",
			chromedp.Navigate(b.baseURL+"/device"), visible("view-code-entry"),
			chromedp.SendKeys(chromedp.CSS("#user-code"), userCode),
			chromedp.Click(chromedp.CSS("#continue")), visible("view-chooser"), visible("choose-github"),
			chromedp.Click(chromedp.CSS("#choose-github")), visible("view-authorize-github"))
		if n := gh.Requests(githubtest.Authorize); n != 1 {
			t.Fatalf("the browser went to GitHub %d times, want 1", n)
		}
		if got := b.eval(`location.pathname + location.search`); got != "/device" {
			t.Errorf("the URL still carries parameters: %q", got)
		}
		for sel, want := range map[string]string{"#github-account": ghHidden.Email, "#github-login": "@hidden-gh",
			"#view-authorize-github .js-user-code": userCode, "#github-client-id": "difyctl", "#github-device-label": "laptop",
			"#github-ip": "192.0.2.10"} {
			if got := b.text(sel); got != want {
				t.Errorf("%s shows %q, want %q", sel, got, want)
			}
		}
		if got := b.text("#view-authorize-github .warning"); !strings.Contains(got, "Only approve if you started this yourself, on your own device") {
			t.Errorf("warning shown: %q", got)
		}
		h.wantPendingIn(t, deviceCode)
		b.screenshot("/tmp/authgate-device-authorize-github.png")
		b.run("approve", chromedp.Click(chromedp.CSS("#github-approve")), visible("view-success"))
		code, body := h.poll(deviceCode)
		tok, _ := body["access_token"].(string)
		acct, _ := body["account"].(map[string]any)
		if code != http.StatusOK || !strings.HasPrefix(tok, "dfoa_") || acct["id"] != ghHidden.ID || body["subject_email"] != "hidden@corp.example" {
			t.Fatalf("poll after the GitHub approval in the browser: %d %v", code, body)
		}
	})

	t.Run("no Dify account for the GitHub user: a clear page, nothing approved", func(t *testing.T) {
		b := b.in(t)
		gh.SignInAs(strangerUser)
		deviceCode, userCode := h.issue()
		b.run("sign in with GitHub as a stranger",
			chromedp.Navigate(b.baseURL+"/device?user_code="+userCode), visible("view-code-entry"),
			chromedp.Click(chromedp.CSS("#continue")), visible("view-chooser"),
			chromedp.Click(chromedp.CSS("#choose-github")), visible("view-github-error"))
		if got := b.text("#github-error-message"); got != githubErrorMessages[githubErrNoAccount] {
			t.Errorf("message: %q", got)
		}
		if got := b.eval(`location.search`); got != "" {
			t.Errorf("the URL still carries parameters: %q", got)
		}
		h.wantPendingIn(t, deviceCode)
	})
}

// wantPendingIn asserts, for any harness, that the code is still waiting: nothing was approved.
func (h *webHarness) wantPendingIn(t testing.TB, deviceCode string) {
	t.Helper()
	if code, body := h.poll(deviceCode); code != http.StatusBadRequest || body["error"] != codeAuthorizationPending {
		t.Fatalf("poll: %d %v, want authorization_pending (nothing approved)", code, body)
	}
}

// Two deliveries of one callback at once (a double-clicked link, a browser retrying): the state is taken once, so exactly
// one signs in and GitHub is asked once.
func TestGitHubCallbackRaceSignsInOnce(t *testing.T) {
	h := newGitHubHarness(t, nil, nil)
	h.gh.SignInAs(hiddenUser)
	deviceCode, userCode := h.issue()
	authorizeURL, state := h.start(userCode)
	target := h.authorize(authorizeURL)
	recs := make([]*httptest.ResponseRecorder, 2)
	var wg sync.WaitGroup
	for i := range recs {
		wg.Go(func() { recs[i] = h.do("GET", target, nil, nil, state) })
	}
	wg.Wait()
	outcomes := map[string]int{}
	sessions := 0
	for _, rec := range recs {
		loc, _ := strings.CutPrefix(rec.Header().Get("Location"), h.cfg.ConsoleWebURL)
		outcomes[loc]++
		if cookieNamed(rec, githubSessionCookieName) != nil && cookieNamed(rec, githubSessionCookieName).MaxAge > 0 {
			sessions++
		}
	}
	if outcomes["/device?github_verified=1"] != 1 || outcomes["/device?github_error="+githubErrState] != 1 || sessions != 1 {
		t.Fatalf("two racing callbacks: %v with %d sessions; want one sign-in and one refusal", outcomes, sessions)
	}
	if n := h.gh.Requests(githubtest.Token); n != 1 {
		t.Fatalf("GitHub was asked for %d tokens, want 1", n)
	}
	h.wantPending(deviceCode)
}

// With Redis hanging, the callback fails closed, whether Redis hangs before GitHub is asked or while it is: 503
// temporarily_unavailable as from every endpoint, no session, the state cookie cleared, and once Redis is back nothing
// was approved.
func TestGitHubCallbackFailsClosedWhileRedisHangs(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	rdb, err := redisclient.Open(redisclient.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	t.Cleanup(srv.Resume)
	var hangAtEmails atomic.Bool // Redis hangs as deviceflow reads /user/emails: after the code was exchanged
	gh := githubtest.NewServer(t)
	h := newWebHarness(t, false, nil, withGitHub(t, gh, func(c *github.Config) {
		c.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if strings.HasSuffix(req.URL.Path, "/user/emails") && hangAtEmails.Load() {
				srv.Pause()
			}
			return http.DefaultTransport.RoundTrip(req)
		})
	}), func(d *Deps, _ *pgxpool.Pool) {
		d.Redis, d.Limiter, d.Revoker = rdb, ratelimit.NewSlidingWindow(rdb), tokencache.NewRevoker(rdb, time.Minute)
	})
	t.Cleanup(func() { noCredentialLogged(t, h, gh) })
	gh.SignInAs(hiddenUser)
	g := &githubHarness{webHarness: h, gh: gh}

	for _, after := range []bool{false, true} {
		deviceCode, userCode := g.issue()
		authorizeURL, state := g.start(userCode)
		target := g.authorize(authorizeURL)
		tokens := len(gh.IssuedTokens())
		if after {
			hangAtEmails.Store(true)
		} else {
			srv.Pause()
		}
		rec := g.do("GET", target, nil, nil, state)
		hangAtEmails.Store(false)
		srv.Resume()
		wantError(t, rec, http.StatusServiceUnavailable, codeUnavailable)
		if c := cookieNamed(rec, githubSessionCookieName); c != nil {
			t.Errorf("hang after GitHub %v: a session cookie was set: %+v", after, c)
		}
		if c := cookieNamed(rec, githubStateCookieName); c == nil || c.MaxAge >= 0 {
			t.Errorf("hang after GitHub %v: the state cookie was not cleared: %+v", after, c)
		}
		if got := len(gh.IssuedTokens()) - tokens; got != map[bool]int{false: 0, true: 1}[after] {
			t.Errorf("hang after GitHub %v: GitHub issued %d tokens", after, got)
		}
		testenv.Eventually(t, 10*time.Second, "a poll answered once Redis is back", func() bool {
			code, body := g.poll(deviceCode)
			if code == http.StatusBadRequest && body["error"] != codeAuthorizationPending {
				t.Fatalf("hang after GitHub %v: poll answered %v, want authorization_pending (nothing approved)", after, body)
			}
			return code == http.StatusBadRequest
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
