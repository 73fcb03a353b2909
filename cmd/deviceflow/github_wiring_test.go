package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/github"
	"github.com/authgate/authgate/internal/github/githubtest"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/testenv"
)

// TestGitHubSignInWiring: with GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET set (and the endpoints pointed at a fake GitHub),
// the server offers GitHub sign-in and completes one with those credentials; without them its routes do not exist.
func TestGitHubSignInWiring(t *testing.T) {
	dbURL := testenv.EmptyPostgresURL(t)
	ctx := t.Context()
	if err := Run(ctx, []string{"migrate"}, env(map[string]string{"DATABASE_URL": dbURL}), io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	pool := testenv.Pool(t, dbURL)
	if _, err := pool.Exec(ctx, dirfixture.Schema); err != nil {
		t.Fatal(err)
	}
	// Lin's Dify account is linked to the github.com user 1001 (Dify's own GitHub sign-in talks to github.com only). The
	// GITHUB_* URLs below name another GitHub (the fake, as a GitHub Enterprise Server would be), whose user 1001 is someone
	// else: Kim, whose verified address is Kim's Dify account's.
	const linID, kimID = "5e000000-0000-4000-8000-0000000000a1", "5e000000-0000-4000-8000-0000000000a2"
	testenv.SeedDirectory(t, pool, dirfixture.Fixture{
		Accounts: []directory.Account{{ID: linID, Email: "lin@corp.example", Name: "Lin", Status: directory.AccountStatusActive},
			{ID: kimID, Email: "kim@corp.example", Name: "Kim", Status: directory.AccountStatusActive}},
		Integrates: []dirfixture.Integrate{{AccountID: linID, Provider: directory.ProviderGitHub, OpenID: "1001"}},
	})
	gh := githubtest.NewServer(t)
	gh.SignInAs(githubtest.Account{ID: 1001, Login: "kim-ghes",
		Emails: []github.Email{{Email: "kim@corp.example", Primary: true, Verified: true}}})

	base := map[string]string{
		"DATABASE_URL": dbURL, "REDIS_URL": testenv.RedisURL(t), "SECRET_KEY": cmdTestSecretKey,
		"DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0", "CONSOLE_WEB_URL": "http://console.test",
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	t.Run("off without the credentials", func(t *testing.T) {
		a, stop := startServing(t, base)
		defer stop()
		res, err := http.Post("http://"+a.api.String()+"/openapi/v1/oauth/device/github/start", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("github/start without GitHub configured: %d, want 404", res.StatusCode)
		}
	})

	t.Run("on with them", func(t *testing.T) {
		vars := map[string]string{"GITHUB_CLIENT_ID": gh.ClientID, "GITHUB_CLIENT_SECRET": gh.ClientSecret,
			"GITHUB_OAUTH_URL": gh.OAuthURL(), "GITHUB_API_URL": gh.APIURL()}
		for k, v := range base {
			vars[k] = v
		}
		a, stop := startServing(t, vars)
		defer stop()
		api := "http://" + a.api.String()
		res, err := http.Post(api+"/openapi/v1/oauth/device/code", "application/json", strings.NewReader(`{"client_id":"difyctl"}`))
		if err != nil {
			t.Fatal(err)
		}
		var code struct {
			UserCode string `json:"user_code"`
		}
		_ = json.NewDecoder(res.Body).Decode(&code)
		res.Body.Close()

		res, err = http.Get(api + "/device")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(res.Body)
		res.Body.Close()
		nonce := regexp.MustCompile(`data-sso-state="([^"]+)"`).FindSubmatch(page)
		if !strings.Contains(string(page), `id="choose-github"`) || nonce == nil {
			t.Fatal("the page does not offer GitHub sign-in")
		}
		req, _ := http.NewRequest("POST", api+"/openapi/v1/oauth/device/github/start",
			strings.NewReader(`{"user_code":"`+code.UserCode+`","state":"`+string(nonce[1])+`"}`))
		req.Header.Set("Content-Type", "application/json")
		for _, c := range res.Cookies() {
			req.AddCookie(c)
		}
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var start struct{ URL string }
		_ = json.NewDecoder(res.Body).Decode(&start)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(start.URL, gh.OAuthURL()+"/login/oauth/authorize?") {
			t.Fatalf("github/start: %d %q", res.StatusCode, start.URL)
		}
		stateCookies := res.Cookies()

		res, err = noRedirect.Get(start.URL)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		back, err := url.Parse(res.Header.Get("Location"))
		if err != nil || back.Host != "console.test" || back.Path != "/device/github/callback" {
			t.Fatalf("GitHub sent the browser to %q", res.Header.Get("Location"))
		}
		req, _ = http.NewRequest("GET", api+back.RequestURI(), nil)
		for _, c := range stateCookies {
			req.AddCookie(c)
		}
		res, err = noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		// The code exchange went through with the configured secret.
		if loc := res.Header.Get("Location"); res.StatusCode != http.StatusFound || loc != "http://console.test/device?github_verified=1" {
			t.Fatalf("callback: %d %q", res.StatusCode, loc)
		}
		// The session is Kim's, found by the verified address: the id of a user of another GitHub than github.com is not
		// the open_id of Dify's links, and must not make Kim Lin.
		req, _ = http.NewRequest("GET", api+"/openapi/v1/oauth/device/github/context", nil)
		for _, c := range res.Cookies() {
			req.AddCookie(c)
		}
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var who struct {
			AccountEmail string `json:"account_email"`
		}
		_ = json.NewDecoder(res.Body).Decode(&who)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || who.AccountEmail != "kim@corp.example" {
			t.Fatalf("signed in as %q (%d), want kim@corp.example", who.AccountEmail, res.StatusCode)
		}
	})
}
