package deviceflow

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
)

// The /device page (docs/architecture.md): one server-rendered HTML document holding every view, a stylesheet and a small
// script, all embedded in the binary. No CDN, no inline script or style, so the CSP can forbid everything else.

//go:embed web
var webFS embed.FS

var (
	pageTemplate = template.Must(template.ParseFS(webFS, "web/device.html"))
	staticFS     = mustSub(webFS, "web/static")
)

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time; its absence is a build defect
	}
	return sub
}

const (
	pageStaticPrefix = devicePagePath + "/static/"
	// pageCSP forbids everything the page does not need: its own script, stylesheet and same-origin API calls.
	pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
	// signinReturnPath is fixed: the return path never comes from the request, so the page cannot become an open redirect.
	signinReturnPath = devicePagePath
)

// ssoErrorMessages is the only text an sso_error parameter can put on the page; anything else gets the generic line.
var ssoErrorMessages = map[string]string{
	codeEmailIsDifyAccount: "This email address belongs to a Dify account. Enter the code again and continue with " +
		"your Dify account instead of SSO.",
}

const ssoErrorGeneric = "Something went wrong while signing in with SSO. Enter the code again to retry."

// githubErrorMessages is the only text a github_error parameter can put on the page; anything else gets the generic line.
var githubErrorMessages = map[string]string{
	githubErrState: "This GitHub sign-in could not be verified: it expired, was already used, or was started in another " +
		"browser. Enter the code again to retry.",
	githubErrDenied:      "GitHub sign-in was cancelled. Enter the code again to retry, or continue with your Dify account.",
	githubErrUnavailable: "GitHub could not be reached or did not complete the sign-in. Nothing was approved; try again in a moment.",
	githubErrNoEmail: "Your GitHub account is not linked to a Dify account and has no verified email address to match " +
		"one by (a private noreply address does not count). Verify an email address on GitHub, or continue with your Dify account.",
	githubErrNoAccount: "No Dify account is linked to this GitHub account or uses its verified email address. " +
		"Continue with your Dify account instead.",
	githubErrInactive:       "The Dify account for this GitHub account is not active, so it cannot approve devices.",
	githubErrCodeNotPending: "The code expired or was already used. Start the sign-in again on your device.",
}

const githubErrorGeneric = "Something went wrong while signing in with GitHub. Enter the code again to retry."

type pageData struct {
	StaticBase  string
	SignedIn    bool
	Enterprise  bool
	SignInURL   string
	CSRFCookie  string
	SSOVerified bool
	SSOError    string
	// SSOState is the nonce of the device_sso_state cookie; the page sends it back to start SSO or GitHub sign-in (EE, or
	// GitHub sign-in on).
	SSOState       string
	GitHub         bool
	GitHubVerified bool
	GitHubError    string
}

// handleDevicePage: GET /device.
func (s *Server) handleDevicePage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	data := pageData{
		StaticBase:  pageStaticPrefix,
		SignedIn:    s.pageSignedIn(r),
		Enterprise:  s.cfg.EnterpriseEnabled && s.deps.Enterprise != nil,
		SignInURL:   s.cfg.ConsoleWebURL + "/signin?" + url.Values{"redirect_url": {signinReturnPath}}.Encode(),
		CSRFCookie:  s.consoleCookieName("csrf_token"),
		SSOVerified: q.Get("sso_verified") == "1",
		GitHub:      s.deps.GitHub != nil,
	}
	if data.GitHub {
		data.GitHubVerified = q.Get("github_verified") == "1"
		if q.Has("github_error") {
			data.GitHubError = githubErrorGeneric
			if msg, ok := githubErrorMessages[q.Get("github_error")]; ok {
				data.GitHubError = msg
			}
		}
	}
	if q.Has("sso_error") {
		data.SSOError = ssoErrorGeneric
		if msg, ok := ssoErrorMessages[q.Get("sso_error")]; ok {
			data.SSOError = msg
		}
	}
	if data.Enterprise || data.GitHub {
		state, err := s.startStateFor(w, r)
		if err != nil {
			return err
		}
		data.SSOState = state
	}
	var body bytes.Buffer
	if err := pageTemplate.Execute(&body, data); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Content-Type", "text/html; charset=utf-8")
	noStore(w)
	_, _ = w.Write(body.Bytes())
	return nil
}

// handleStatic: GET /device/static/{name}, the embedded assets.
func (s *Server) handleStatic(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if _, err := fs.Stat(staticFS, name); err != nil || name == "." {
		return errorf(http.StatusNotFound, codeNotFound, "no such file")
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	http.ServeFileFS(w, r, staticFS, name)
	return nil
}
