package config_test

import (
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/config"
)

func TestGitHubSignInIsOffByDefault(t *testing.T) {
	c, _, err := config.LoadDeviceflow(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.GitHub{OAuthURL: "https://github.com", APIURL: "https://api.github.com"}
	if c.GitHub != want || c.GitHub.Enabled() || c.GitHub.Enterprise() {
		t.Fatalf("GitHub = %+v (enabled %v, enterprise %v), want %+v, off, github.com", c.GitHub, c.GitHub.Enabled(),
			c.GitHub.Enterprise(), want)
	}
}

// Any URL but github.com's is another GitHub, whose user ids are not the ones Dify's links hold.
func TestGitHubEnterpriseIsAnyOtherURL(t *testing.T) {
	for vars, want := range map[[2]string]bool{
		{"https://github.com/", "https://api.github.com/"}:                         false,
		{"https://GitHub.com", "https://API.github.com"}:                           false,
		{"https://github.example.com", "https://github.example.com/api/v3"}:        true,
		{"https://github.com", "https://github.example.com/api/v3"}:                true,
		{"https://octo.ghe.com", "https://api.github.com"}:                         true,
		{"https://github.com", "https://github-proxy.internal.example/api.github"}: true,
	} {
		c, _, err := config.LoadDeviceflow(env(map[string]string{"GITHUB_OAUTH_URL": vars[0], "GITHUB_API_URL": vars[1]}))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.GitHub.Enterprise(); got != want {
			t.Errorf("%v: Enterprise() = %v, want %v", vars, got, want)
		}
	}
}

func TestGitHubSignInIsReadWithDifysNames(t *testing.T) {
	c, _, err := config.LoadDeviceflow(env(map[string]string{
		"GITHUB_CLIENT_ID":     " Ov23liAbCdEfGhIjKlMn ",
		"GITHUB_CLIENT_SECRET": "0123456789abcdef0123456789abcdef01234567",
		"GITHUB_OAUTH_URL":     "https://github.example.com/",
		"GITHUB_API_URL":       "https://github.example.com/api/v3/",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.GitHub{ClientID: "Ov23liAbCdEfGhIjKlMn", ClientSecret: "0123456789abcdef0123456789abcdef01234567",
		OAuthURL: "https://github.example.com", APIURL: "https://github.example.com/api/v3"}
	if c.GitHub != want || !c.GitHub.Enabled() || !c.GitHub.Enterprise() {
		t.Fatalf("GitHub = %+v (enabled %v), want %+v, on, enterprise", c.GitHub, c.GitHub.Enabled(), want)
	}
	// Empty values are unset, as for every variable: a Dify .env with GITHUB_CLIENT_ID= leaves it off.
	c, _, err = config.LoadDeviceflow(env(map[string]string{"GITHUB_CLIENT_ID": "", "GITHUB_CLIENT_SECRET": " "}))
	if err != nil || c.GitHub.Enabled() {
		t.Fatalf("empty GITHUB_* = %+v, %v; want off", c.GitHub, err)
	}
}

func TestGitHubSignInBadValuesNameTheirVariable(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef01234567"
	cases := []struct {
		vars    map[string]string
		wantVar string
	}{
		{map[string]string{"GITHUB_CLIENT_ID": "Ov23liAbCdEfGhIjKlMn"}, "GITHUB_CLIENT_SECRET"},
		{map[string]string{"GITHUB_CLIENT_SECRET": secret}, "GITHUB_CLIENT_ID"},
		{map[string]string{"GITHUB_CLIENT_ID": "Ov23li AbCd", "GITHUB_CLIENT_SECRET": secret}, "GITHUB_CLIENT_ID"},
		{map[string]string{"GITHUB_CLIENT_ID": "Ov23li", "GITHUB_CLIENT_SECRET": "s3cret\x00tail"}, "GITHUB_CLIENT_SECRET"},
		{map[string]string{"GITHUB_CLIENT_ID": "Ov23li", "GITHUB_CLIENT_SECRET": "s3cret tail"}, "GITHUB_CLIENT_SECRET"},
		{map[string]string{"GITHUB_OAUTH_URL": "github.com"}, "GITHUB_OAUTH_URL"},
		{map[string]string{"GITHUB_API_URL": "ftp://api.github.com"}, "GITHUB_API_URL"},
		{map[string]string{"GITHUB_OAUTH_URL": "http://github.example.com"}, "GITHUB_OAUTH_URL"},
		{map[string]string{"GITHUB_API_URL": "http://10.0.0.7/api/v3"}, "GITHUB_API_URL"},
	}
	for _, c := range cases {
		_, _, err := config.LoadDeviceflow(env(c.vars))
		if err == nil {
			t.Errorf("%v: accepted", c.vars)
			continue
		}
		wantVarError(t, err, c.wantVar)
		for _, v := range []string{"s3cret", secret} {
			if strings.Contains(err.Error(), v) {
				t.Errorf("%v: the error quotes the client secret: %v", c.vars, err)
			}
		}
	}
	// Plain http is for a GitHub standing in on this host (tests, a local fake): the secret never leaves the machine.
	for _, u := range []string{"http://127.0.0.1:8123", "http://[::1]:8123/api/v3", "http://localhost:8123"} {
		if _, _, err := config.LoadDeviceflow(env(map[string]string{"GITHUB_OAUTH_URL": u, "GITHUB_API_URL": u})); err != nil {
			t.Errorf("loopback %s refused: %v", u, err)
		}
	}
	// extauthz has no GitHub sign-in and does not read these.
	if _, _, err := config.LoadExtauthz(env(map[string]string{"GITHUB_CLIENT_ID": "Ov23li", "GITHUB_OAUTH_URL": "x"})); err != nil {
		t.Fatalf("extauthz read GITHUB_*: %v", err)
	}
}
