package github_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/github"
	"github.com/authgate/authgate/internal/github/githubtest"
)

const redirectURI = "https://dify.example.com/device/github/callback"

// verifier is a PKCE verifier (43 characters) and its challenge.
const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

var (
	octocat = githubtest.Account{ID: 583231, Login: "octocat", Email: "octocat@example.com", Emails: []github.Email{
		{Email: "octocat@example.com", Verified: true},
		{Email: "primary@example.com", Primary: true, Verified: true},
	}}
	hidden = githubtest.Account{ID: 42, Login: "hidden", Emails: []github.Email{
		{Email: "42+hidden@users.noreply.github.com", Verified: true},
		{Email: "hidden@example.com", Primary: true, Verified: true},
	}}
)

// authorize runs the browser's part: the authorization request, answered by the fake with a redirect carrying the code.
func authorize(t *testing.T, c *github.Client, state string) url.Values {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(c.AuthorizeURL(redirectURI, state, githubtest.Challenge(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), redirectURI+"?") {
		t.Fatalf("authorize: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestAuthorizeURL(t *testing.T) {
	c := github.New(github.Config{ClientID: "Ov23li", ClientSecret: "s", OAuthURL: "https://ghe.example.com/"})
	u, err := url.Parse(c.AuthorizeURL(redirectURI, "st", "ch"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	want := map[string]string{"client_id": "Ov23li", "redirect_uri": redirectURI, "scope": "read:user user:email",
		"state": "st", "code_challenge": "ch", "code_challenge_method": "S256", "allow_signup": "false"}
	if u.Scheme+"://"+u.Host+u.Path != "https://ghe.example.com/login/oauth/authorize" || len(q) != len(want) {
		t.Fatalf("authorize URL %s", u)
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, q.Get(k), v)
		}
	}
	if strings.Contains(u.String(), "client_secret") {
		t.Fatal("the secret goes to the browser")
	}
}

func TestIdentify(t *testing.T) {
	gh := githubtest.NewServer(t)
	c := github.New(gh.Config())
	enterprise := gh.Config()
	enterprise.Enterprise = true
	for _, tc := range []struct {
		c    *github.Client
		who  githubtest.Account
		want github.Identity
	}{
		{c, octocat, github.Identity{ID: "583231", OpenID: "583231", Login: "octocat", Email: "octocat@example.com"}},
		{c, hidden, github.Identity{ID: "42", OpenID: "42", Login: "hidden", Email: "hidden@example.com"}}, // resolved from /user/emails
		// Another GitHub's user ids are not github.com's: no open_id of a Dify link.
		{github.New(enterprise), hidden, github.Identity{ID: "42", Login: "hidden", Email: "hidden@example.com"}},
	} {
		c := tc.c
		gh.SignInAs(tc.who)
		back := authorize(t, c, "state-1")
		if back.Get("state") != "state-1" {
			t.Fatalf("state came back as %q", back.Get("state"))
		}
		got, err := c.Identify(context.Background(), redirectURI, back.Get("code"), verifier)
		if err != nil || got != tc.want {
			t.Fatalf("Identify = %+v, %v; want %+v", got, err, tc.want)
		}
	}
}

func TestIdentifyFailures(t *testing.T) {
	gh := githubtest.NewServer(t)
	gh.SignInAs(octocat)
	c := github.New(gh.Config())
	ctx := context.Background()

	t.Run("the code is single-use and needs its verifier and redirect URI", func(t *testing.T) {
		code := authorize(t, c, "s").Get("code")
		for _, tc := range []struct{ redirect, code, verifier, reason string }{
			{redirectURI, code, "", "refused: invalid_grant"},
			{redirectURI, "another-code", verifier, "refused: bad_verification_code"},
		} {
			_, err := c.Identify(ctx, tc.redirect, tc.code, tc.verifier)
			var ge *github.Error
			if !errors.As(err, &ge) || ge.Op != "token exchange" || ge.Reason != tc.reason {
				t.Fatalf("Identify(%q) = %v, want token exchange %s", tc.code, err, tc.reason)
			}
		}
		// The verifier-less attempt used the code up, as GitHub does.
		if _, err := c.Identify(ctx, redirectURI, code, verifier); err == nil {
			t.Fatal("a code was accepted twice")
		}
		code = authorize(t, c, "s").Get("code")
		if _, err := c.Identify(ctx, "https://evil.example/cb", code, verifier); err == nil || !strings.Contains(err.Error(), "redirect_uri_mismatch") {
			t.Fatalf("another redirect URI: %v", err)
		}
		code = authorize(t, c, "s").Get("code")
		wrongSecret := gh.Config()
		wrongSecret.ClientSecret = "not-the-secret"
		if _, err := github.New(wrongSecret).Identify(ctx, redirectURI, code, verifier); err == nil ||
			!strings.Contains(err.Error(), "incorrect_client_credentials") {
			t.Fatalf("wrong secret: %v", err)
		}
	})

	t.Run("GitHub errors and odd answers", func(t *testing.T) {
		cases := []struct {
			endpoint string
			fault    githubtest.Fault
			want     string
		}{
			{githubtest.Token, githubtest.Fault{Status: 502}, "token exchange: status 502"},
			{githubtest.Token, githubtest.Fault{Status: 200, Body: `{"token_type":"bearer"}`}, "no usable access token"},
			{githubtest.Token, githubtest.Fault{Status: 200, Body: `{"access_token":"gho_a\r\nX-Evil: 1"}`}, "no usable access token"},
			{githubtest.Token, githubtest.Fault{Status: 200, Body: `{"error":"Some <b>HTML</b>"}`}, "(unrecognised error code)"},
			{githubtest.Token, githubtest.Fault{Status: 302, Body: `{}`}, "token exchange: status 302"},
			{githubtest.User, githubtest.Fault{Status: 500}, "read user: status 500"},
			{githubtest.User, githubtest.Fault{Status: 200, Body: `{"login":"x"}`}, "read user: no user id"},
			{githubtest.User, githubtest.Fault{Status: 200, Body: `not json`}, "read user: answer is not the expected JSON"},
			{githubtest.Emails, githubtest.Fault{Status: 403}, "read emails: status 403"},
			{githubtest.Emails, githubtest.Fault{Status: 200, Body: `{"email":"x"}`}, "read emails: answer is not the expected JSON"},
			{githubtest.Emails, githubtest.Fault{Status: 200, Body: `[` + strings.Repeat(`{"email":"a@b.c"},`, 70_000) + `{}]`},
				"read emails: answer larger than"},
		}
		for _, tc := range cases {
			gh.ClearFaults()
			code := authorize(t, c, "s").Get("code")
			gh.SetFault(tc.endpoint, tc.fault)
			_, err := c.Identify(ctx, redirectURI, code, verifier)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %+v: err = %v, want %q", tc.endpoint, tc.fault.Status, err, tc.want)
			}
		}
		gh.ClearFaults()
	})

	t.Run("a hung GitHub is a timeout, not a hang", func(t *testing.T) {
		cfg := gh.Config()
		cfg.Timeout = 200 * time.Millisecond
		fast := github.New(cfg)
		for _, endpoint := range []string{githubtest.Token, githubtest.User, githubtest.Emails} {
			gh.ClearFaults()
			code := authorize(t, fast, "s").Get("code")
			gh.SetFault(endpoint, githubtest.Fault{Hang: true})
			start := time.Now()
			_, err := fast.Identify(ctx, redirectURI, code, verifier)
			var ge *github.Error
			if !errors.As(err, &ge) || ge.Reason != "unreachable" && ge.Reason != "answer not read" {
				t.Fatalf("%s hung: err = %v, want unreachable", endpoint, err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("%s hung: Identify took %v", endpoint, took)
			}
		}
		gh.ClearFaults()
		// The caller's deadline bounds the whole sign-in too.
		code := authorize(t, c, "s").Get("code")
		gh.SetFault(githubtest.User, githubtest.Fault{Hang: true})
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := c.Identify(short, redirectURI, code, verifier); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("caller's deadline: err = %v, want DeadlineExceeded", err)
		}
		gh.ClearFaults()
	})

	t.Run("no error text carries a credential", func(t *testing.T) {
		// Every failure after the exchange holds a live token in the client; none may leak into the error.
		for _, endpoint := range []string{githubtest.User, githubtest.Emails} {
			gh.ClearFaults()
			code := authorize(t, c, "s").Get("code")
			gh.SetFault(endpoint, githubtest.Fault{Status: 401})
			_, err := c.Identify(ctx, redirectURI, code, verifier)
			tokens := gh.IssuedTokens()
			for _, secret := range []string{tokens[len(tokens)-1], code, verifier, gh.ClientSecret} {
				if err == nil || strings.Contains(err.Error(), secret) {
					t.Fatalf("%s: err %v holds a credential", endpoint, err)
				}
			}
		}
		gh.ClearFaults()
	})
}

func TestMatchingEmail(t *testing.T) {
	v := func(addr string) github.Email { return github.Email{Email: addr, Verified: true} }
	primary := func(e github.Email) github.Email { e.Primary = true; return e }
	unverified := func(addr string) github.Email { return github.Email{Email: addr} }
	cases := []struct {
		name    string
		profile string
		emails  []github.Email
		want    string
	}{
		{"public profile email, verified", "Pub@Example.com", []github.Email{primary(v("p@example.com")), v("pub@example.com")},
			"pub@example.com"},
		{"hidden profile email: the primary verified one", "", []github.Email{v("other@example.com"), primary(v("p@example.com"))},
			"p@example.com"},
		{"only a non-primary verified one", "", []github.Email{primary(unverified("p@example.com")), v("second@example.com")},
			"second@example.com"},
		{"a profile email GitHub does not list as verified is not used", "pub@example.com",
			[]github.Email{unverified("pub@example.com"), primary(v("p@example.com"))}, "p@example.com"},
		{"only unverified", "", []github.Email{primary(unverified("p@example.com")), unverified("q@example.com")}, ""},
		{"unverified public profile email", "pub@example.com", []github.Email{unverified("pub@example.com")}, ""},
		{"a profile email GitHub does not list at all is not used", "pub@example.com", nil, ""},
		{"noreply only", "", []github.Email{primary(v("1+me@users.noreply.github.com"))}, ""},
		{"noreply as the profile email", "1+me@users.noreply.github.com",
			[]github.Email{v("1+me@users.noreply.github.com"), v("real@example.com")}, "real@example.com"},
		{"GitHub Enterprise Server noreply", "", []github.Email{primary(v("me@USERS.NOREPLY.ghe.example.com"))}, ""},
		{"nothing at all", "", nil, ""},
	}
	for _, c := range cases {
		if got := github.MatchingEmail(c.profile, c.emails); got != c.want {
			t.Errorf("%s: MatchingEmail = %q, want %q", c.name, got, c.want)
		}
	}
	if github.IsNoreply("noreply@example.com") || github.IsNoreply("users.noreply.github.com") || !github.IsNoreply("a@users.noreply.github.com") {
		t.Fatal("IsNoreply")
	}
}
