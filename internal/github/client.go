// Package github is the client of GitHub's OAuth web flow and REST API behind the /device page's GitHub sign-in: the
// authorization URL (state and a PKCE S256 challenge), the code exchange, and the signed-in user's id, login and the email
// address to match a Dify account by. The access token lives only inside one call of Identify: it is never returned,
// stored or logged, and no error text carries it, the code, the PKCE verifier or the client secret. It works against
// github.com and GitHub Enterprise Server alike (Config's two base URLs).
package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Scopes are what the sign-in asks for: read:user for the profile (id, login, public email) and user:email for the
// addresses, hidden and unverified ones included, with their verified and primary flags.
const Scopes = "read:user user:email"

// apiVersion pins the REST API's version (GitHub's X-GitHub-Api-Version).
const apiVersion = "2022-11-28"

// Config locates GitHub and tunes the client; zero values take the defaults.
type Config struct {
	ClientID     string
	ClientSecret string
	// OAuthURL is GitHub's web origin (https://github.com; GitHub Enterprise Server: https://HOST), without a trailing slash.
	OAuthURL string
	// APIURL is the REST API's base (https://api.github.com; GitHub Enterprise Server: https://HOST/api/v3).
	APIURL string
	// Timeout bounds each HTTP call; the caller's ctx deadline still applies when it is earlier. Default 5 s.
	Timeout time.Duration
	// MaxBody caps each response body in bytes; a larger one is an error. Default 1 MiB.
	MaxBody int64
	// Transport overrides the HTTP transport (tests, custom TLS). Redirects are never followed whatever it does.
	Transport http.RoundTripper
	// Enterprise says the two URLs are a GitHub other than github.com (GitHub Enterprise Server, GHE.com). Its user ids are
	// its own numbering, so they are not the ids Dify's links hold: Identity.OpenID stays empty.
	Enterprise bool
}

// Client signs people in with GitHub. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
}

// New returns a client for cfg.
func New(cfg Config) *Client {
	if cfg.OAuthURL == "" {
		cfg.OAuthURL = "https://github.com"
	}
	if cfg.APIURL == "" {
		cfg.APIURL = "https://api.github.com"
	}
	cfg.OAuthURL = strings.TrimRight(cfg.OAuthURL, "/")
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	return &Client{cfg: cfg, http: &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
		// A redirect is an answer we did not ask for: it is reported as the status it is, never followed with the token.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// AuthorizeURL is where the browser signs in: GitHub's authorization request for Scopes, returning to redirectURI with
// state, bound to the PKCE challenge (S256). Signing up for a GitHub account on the way is not offered: a new GitHub
// account cannot be linked to a Dify account.
func (c *Client) AuthorizeURL(redirectURI, state, challenge string) string {
	q := url.Values{
		"client_id":             {c.cfg.ClientID},
		"redirect_uri":          {redirectURI},
		"scope":                 {Scopes},
		"state":                 {state},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
		"allow_signup":          {"false"},
	}
	return c.cfg.OAuthURL + "/login/oauth/authorize?" + q.Encode()
}

// Identity is the GitHub user a sign-in proved.
type Identity struct {
	// ID is the user's numeric id as a decimal string. It never changes, unlike the login.
	ID string
	// OpenID is the open_id by which Dify's account_integrates links an account to this user (provider github): ID on
	// github.com, the only GitHub Dify's own GitHub sign-in talks to; empty on any other (Config.Enterprise), whose ids are
	// numbered apart from github.com's: its user 1001 is not the person github.com's user 1001 is.
	OpenID string
	Login  string
	// Email is the address to match a Dify account by (MatchingEmail); empty when the user has none that qualifies.
	Email string
}

// Error is a failed sign-in: GitHub refused (Reason is its error code), answered something unusable, or could not be reached
// in time (Err). Its text names the step and the reason only.
type Error struct {
	Op     string // "token exchange", "read user", "read emails"
	Reason string
	Err    error
}

func (e *Error) Error() string {
	msg := "github: " + e.Op + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Identify finishes a sign-in: it exchanges the code (with the PKCE verifier that matches the authorization request's
// challenge, and redirectURI as sent there) for an access token, reads the user and their email addresses with it, and
// forgets it.
func (c *Client) Identify(ctx context.Context, redirectURI, code, verifier string) (Identity, error) {
	token, err := c.exchange(ctx, redirectURI, code, verifier)
	if err != nil {
		return Identity{}, err
	}
	var user struct {
		ID    int64   `json:"id"`
		Login string  `json:"login"`
		Email *string `json:"email"`
	}
	if err := c.get(ctx, "read user", "/user", token, &user); err != nil {
		return Identity{}, err
	}
	if user.ID <= 0 {
		return Identity{}, &Error{Op: "read user", Reason: "no user id in the answer"}
	}
	var emails []Email
	if err := c.get(ctx, "read emails", "/user/emails?per_page=100", token, &emails); err != nil {
		return Identity{}, err
	}
	profile := ""
	if user.Email != nil {
		profile = *user.Email
	}
	id := Identity{ID: strconv.FormatInt(user.ID, 10), Login: user.Login, Email: MatchingEmail(profile, emails)}
	if !c.cfg.Enterprise {
		id.OpenID = id.ID
	}
	return id, nil
}

// exchange trades the authorization code for an access token. GitHub answers a refused exchange with 200 and an error
// code in the body.
func (c *Client) exchange(ctx context.Context, redirectURI, code, verifier string) (string, error) {
	const op = "token exchange"
	form := url.Values{
		"client_id":     {c.cfg.ClientID},
		"client_secret": {c.cfg.ClientSecret},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.OAuthURL+"/login/oauth/access_token",
		strings.NewReader(form.Encode()))
	if err != nil {
		return "", &Error{Op: op, Reason: "bad request", Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := c.do(req, op, &out); err != nil {
		return "", err
	}
	switch {
	case out.Error != "":
		return "", &Error{Op: op, Reason: "refused: " + errorCode(out.Error)}
	case out.AccessToken == "" || strings.ContainsFunc(out.AccessToken, notTokenChar):
		return "", &Error{Op: op, Reason: "no usable access token in the answer"}
	}
	return out.AccessToken, nil
}

// get reads one REST resource with the access token.
func (c *Client) get(ctx context.Context, op, path, token string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.APIURL+path, nil)
	if err != nil {
		return &Error{Op: op, Reason: "bad request", Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", apiVersion)
	return c.do(req, op, into)
}

// do sends req and decodes a 200 JSON answer of at most MaxBody bytes into into.
func (c *Client) do(req *http.Request, op string, into any) error {
	req.Header.Set("User-Agent", "authgate")
	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Op: op, Reason: "unreachable", Err: transportError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBody+1))
	switch {
	case err != nil:
		return &Error{Op: op, Reason: "answer not read", Err: transportError(err)}
	case int64(len(body)) > c.cfg.MaxBody:
		return &Error{Op: op, Reason: "answer larger than " + strconv.FormatInt(c.cfg.MaxBody, 10) + " bytes"}
	case resp.StatusCode != http.StatusOK:
		return &Error{Op: op, Reason: "status " + strconv.Itoa(resp.StatusCode)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(into); err != nil {
		return &Error{Op: op, Reason: "answer is not the expected JSON"}
	}
	return nil
}

// transportError keeps what a transport failure says about the cause (a timeout, a refused connection) without the
// request it failed on.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, redactedURL(ue.URL), ue.Err)
	}
	return err
}

// redactedURL is u without its query.
func redactedURL(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}

// errorCode is GitHub's error code as it may appear in a log line: OAuth error codes are lower-case words and underscores.
func errorCode(s string) string {
	if len(s) > 64 || strings.ContainsFunc(s, func(c rune) bool { return !(c == '_' || c >= 'a' && c <= 'z') }) {
		return "(unrecognised error code)"
	}
	return s
}

// notTokenChar is anything an access token never holds; such a token would not even fit in a header.
func notTokenChar(c rune) bool { return c <= ' ' || c > '~' }
