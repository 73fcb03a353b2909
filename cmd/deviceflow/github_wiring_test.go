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
	const accountID = "5e000000-0000-4000-8000-0000000000a1"
	testenv.SeedDirectory(t, pool, dirfixture.Fixture{
		Accounts:   []directory.Account{{ID: accountID, Email: "lin@corp.example", Name: "Lin", Status: directory.AccountStatusActive}},
		Integrates: []dirfixture.Integrate{{AccountID: accountID, Provider: directory.ProviderGitHub, OpenID: "1001"}},
	})
	gh := githubtest.NewServer(t)
	gh.SignInAs(githubtest.Account{ID: 1001, Login: "lin-gh", Emails: []github.Email{{Email: "x@y.example", Primary: true}}})

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
		// The code exchange went through with the configured secret, and the linked account signed in.
		if loc := res.Header.Get("Location"); res.StatusCode != http.StatusFound || loc != "http://console.test/device?github_verified=1" {
			t.Fatalf("callback: %d %q", res.StatusCode, loc)
		}
	})
}
