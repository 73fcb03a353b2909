package config

import (
	"net/netip"
	"net/url"
	"strings"
)

// Defaults of GitHub's endpoints; GitHub Enterprise Server serves them at https://HOST and https://HOST/api/v3.
const (
	DefaultGitHubOAuthURL = "https://github.com"
	DefaultGitHubAPIURL   = "https://api.github.com"
)

// GitHub is the /device page's sign-in with GitHub (deviceflow), with Dify's variable names. It is on only when both the
// client id and secret are set.
type GitHub struct {
	ClientID     string // GITHUB_CLIENT_ID: the OAuth App's client id
	ClientSecret string // GITHUB_CLIENT_SECRET: its secret; never shown in errors or logs
	OAuthURL     string // GITHUB_OAUTH_URL: where the authorize and token endpoints are (/login/oauth/...)
	APIURL       string // GITHUB_API_URL: the REST API (/user, /user/emails)
}

// Enabled reports whether the page offers GitHub sign-in.
func (g GitHub) Enabled() bool { return g.ClientID != "" && g.ClientSecret != "" }

// Enterprise reports whether the URLs name another GitHub than github.com (GitHub Enterprise Server, GHE.com, or anything
// standing in for github.com): its user ids are not github.com's, which are the ones Dify's account links hold.
func (g GitHub) Enterprise() bool {
	return !strings.EqualFold(g.OAuthURL, DefaultGitHubOAuthURL) || !strings.EqualFold(g.APIURL, DefaultGitHubAPIURL)
}

func readGitHub(r *reader) GitHub {
	g := GitHub{
		ClientID:     r.String("GITHUB_CLIENT_ID", ""),
		ClientSecret: r.String("GITHUB_CLIENT_SECRET", ""),
		OAuthURL:     r.URL("GITHUB_OAUTH_URL", DefaultGitHubOAuthURL),
		APIURL:       r.URL("GITHUB_API_URL", DefaultGitHubAPIURL),
	}
	for _, u := range [...]struct{ name, value string }{{"GITHUB_OAUTH_URL", g.OAuthURL}, {"GITHUB_API_URL", g.APIURL}} {
		if !httpsOrLoopback(u.value) {
			r.fail(u.name, "must be https: the client secret, GitHub's one-time code and its access token travel over it "+
				"(plain http only to a loopback address, for tests): %s", u.value)
		}
	}
	switch {
	case g.ClientID != "" && g.ClientSecret == "":
		r.fail("GITHUB_CLIENT_SECRET", "required when GITHUB_CLIENT_ID is set (GitHub sign-in on the /device page)")
	case g.ClientID == "" && g.ClientSecret != "":
		r.fail("GITHUB_CLIENT_ID", "required when GITHUB_CLIENT_SECRET is set (GitHub sign-in on the /device page)")
	case strings.ContainsFunc(g.ClientID, notTokenChar):
		r.fail("GITHUB_CLIENT_ID", "must be the OAuth App's client id, without spaces or control characters")
	case strings.ContainsFunc(g.ClientSecret, notTokenChar):
		// The value is never quoted: it is a secret.
		r.fail("GITHUB_CLIENT_SECRET", "must be the OAuth App's client secret, without spaces or control characters")
	}
	return g
}

// notTokenChar is a character no GitHub client id or secret holds: whitespace, a control character, or anything outside
// printable ASCII. Such a value is a copy-and-paste mistake that GitHub would only answer with a failed sign-in.
func notTokenChar(c rune) bool { return c <= ' ' || c > '~' }

// httpsOrLoopback: an https URL, or an http one whose host is a loopback address or localhost. A URL that does not parse is
// left to the URL reader, which has already named it.
func httpsOrLoopback(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return true
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
