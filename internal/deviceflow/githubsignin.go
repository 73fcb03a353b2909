package deviceflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/github"
	"github.com/authgate/authgate/internal/ids"
)

// The GitHub branch of the account approval (GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET set): for a person whose browser
// cannot present the Dify console's session to the /device page (the page on another host than the console's cookie reaches)
// but who signs in to Dify with GitHub. The page starts GitHub's authorization code flow (state bound to a cookie, PKCE
// S256); the callback identifies the GitHub user, finds the Dify account Dify linked to it or that holds its verified email
// (never creating one), and sets a 5-minute GitHub session cookie bound to the code. The page then shows the same device
// context as for a console session, and the person approves or denies through the account branch's own endpoints
// (approve.go): same CSRF rule shape, limits, budgets and audit, with via github.
const (
	githubCallbackPath      = devicePagePath + "/github/callback"
	githubStateCookieName   = "device_github_state"
	githubSessionCookieName = "device_github_session"
	// githubStateKeyPrefix keys one started sign-in in Redis by the SHA-256 of its state: the code it is for and the PKCE
	// verifier, which never leaves the server. The callback takes it with GETDEL, so a state is used once.
	githubStateKeyPrefix = "device_github_state:"
	// githubStateTTL is how long a person has at GitHub between the start and the callback.
	githubStateTTL = 10 * time.Minute
	// githubSignInTimeout bounds the code exchange and the two API reads together, while the browser waits on the callback.
	githubSignInTimeout = 10 * time.Second

	viaConsole = "console"
	viaGitHub  = "github"
)

// The reasons a GitHub sign-in ends on the page's error view, as the github_error parameter; the text comes from
// githubErrorMessages (page.go), never from the parameter.
const (
	githubErrState          = "github_state_invalid"
	githubErrDenied         = "github_denied"
	githubErrUnavailable    = "github_unavailable"
	githubErrNoEmail        = "github_no_verified_email"
	githubErrNoAccount      = "github_no_account"
	githubErrInactive       = "github_account_inactive"
	githubErrCodeNotPending = "code_not_pending"
)

// githubOnly hides a route while GitHub sign-in is off: it answers 404 as if it did not exist.
func (s *Server) githubOnly(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.deps.GitHub == nil {
			return errorf(http.StatusNotFound, codeNotFound, "no such endpoint")
		}
		return h(w, r)
	}
}

// githubCallbackURL is the redirect_uri: on the page's origin, so the cookies it sets reach the page's API calls. The GitHub
// OAuth App must list it (or a prefix of it) as its callback URL.
func (s *Server) githubCallbackURL() string { return s.cfg.ConsoleWebURL + githubCallbackPath }

// githubCookie builds the GitHub branch's cookies: never readable by script, not sent by other sites' requests other than
// top-level navigations (the callback is one), Secure unless the page is served over http; maxAge < 0 deletes it.
func (s *Server) githubCookie(name, value, path string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: !isHTTP(s.cfg.ConsoleWebURL), SameSite: http.SameSiteLaxMode}
}

// githubStart is what the callback needs from its start.
type githubStart struct {
	UserCode string `json:"user_code"`
	Verifier string `json:"code_verifier"`
}

func githubStateKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return githubStateKeyPrefix + hex.EncodeToString(sum[:])
}

// newOAuthSecret is 32 random bytes, base64url without padding: a state, or a PKCE verifier (43 characters, RFC 7636 §4.1).
func newOAuthSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// pkceChallenge is the S256 challenge of a verifier (RFC 7636 §4.2).
func pkceChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// handleGitHubStart: POST /oauth/device/github/start with user_code and state → {"url": GitHub's authorization URL}. Only
// the /device page starts a sign-in, after the person confirmed the code (the state is the nonce of its device_sso_state
// cookie, as for SSO): GitHub signs a person who already authorized the app in without a click, so a link must not lead one
// click from "Authorize this device?". The checks are startFromPage's, with the GitHub-start limit.
func (s *Server) handleGitHubStart(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	userCode, err := s.startFromPage(w, r, limitGitHubStart)
	if err != nil {
		return err
	}
	state, verifier := newOAuthSecret(), newOAuthSecret()
	record, err := json.Marshal(githubStart{UserCode: userCode, Verifier: verifier})
	if err != nil {
		return err
	}
	callCtx, cancel := redisCall(ctx)
	defer cancel()
	if err := s.deps.Redis.Set(callCtx, githubStateKey(state), record, githubStateTTL).Err(); err != nil {
		return redisFailure("record GitHub sign-in", err)
	}
	noStore(w)
	http.SetCookie(w, s.githubCookie(githubStateCookieName, state, githubCallbackPath, int(githubStateTTL/time.Second)))
	// A GitHub session left over from another tab must not stand in for this sign-in.
	http.SetCookie(w, s.githubCookie(githubSessionCookieName, "", approvalGrantCookiePath, -1))
	writeJSON(w, http.StatusOK, struct {
		URL string `json:"url"`
	}{s.deps.GitHub.AuthorizeURL(s.githubCallbackURL(), state, pkceChallenge(verifier))})
	return nil
}

// takeGitHubStart returns and deletes the sign-in started with state; found is false for an unknown, expired or used one.
func (s *Server) takeGitHubStart(ctx context.Context, state string) (githubStart, bool, error) {
	ctx, cancel := redisCall(ctx)
	defer cancel()
	raw, err := s.deps.Redis.GetDel(ctx, githubStateKey(state)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return githubStart{}, false, nil
	case err != nil:
		return githubStart{}, false, redisFailure("take GitHub sign-in", err)
	}
	var st githubStart
	if err := json.Unmarshal(raw, &st); err != nil {
		return githubStart{}, false, nil // not a record this server wrote: as good as none
	}
	return st, true, nil
}

// handleGitHubCallback: GET /device/github/callback?code=&state= (or ?error=&state=), where GitHub sends the browser back.
// Every outcome is a redirect to the /device page: the GitHub session cookie and github_verified=1, or github_error=<reason>
// with nothing approved and no session. The authorization code, the state and the access token are never logged.
func (s *Server) handleGitHubCallback(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	noStore(w)
	http.SetCookie(w, s.githubCookie(githubStateCookieName, "", githubCallbackPath, -1)) // used once, whatever happens
	q := r.URL.Query()
	refuse := func(reason string, attrs ...any) error {
		attrs = append([]any{"reason", reason, "branch", "account", "via", viaGitHub, "client_ip", s.clientIP(r).String()},
			attrs...)
		s.audit(ctx, auditFlowRejected, attrs...)
		http.Redirect(w, r, s.pageURL("github_error", reason), http.StatusFound)
		return nil
	}

	// The state must be the one this browser's cookie holds (so nobody can hand this browser a sign-in of theirs), and one
	// this service started and nobody used yet.
	state := q.Get("state")
	if state == "" || len(state) > 128 {
		return refuse(githubErrState, "detail", "no state")
	}
	if c, err := r.Cookie(githubStateCookieName); err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		// The sign-in named here came back to another browser than the one that started it: whoever started it may have
		// sent GitHub's authorization URL to someone, whose GitHub answered with a code for them. It ends now, so that this
		// URL, should it leak, cannot sign the starting browser in as the person it was sent to.
		if _, _, err := s.takeGitHubStart(ctx, state); err != nil {
			return err
		}
		return refuse(githubErrState, "detail", "the state is not this browser's")
	}
	start, found, err := s.takeGitHubStart(ctx, state)
	if err != nil {
		return err
	}
	if !found {
		return refuse(githubErrState, "detail", "the state expired or was already used")
	}
	userCode := start.UserCode
	if e := q.Get("error"); e != "" {
		if e == "access_denied" {
			return refuse(githubErrDenied)
		}
		return refuse(githubErrUnavailable, "detail", "GitHub answered the authorization with an error")
	}
	code := q.Get("code")
	if code == "" || len(code) > 512 {
		return refuse(githubErrUnavailable, "detail", "no authorization code")
	}

	// GitHub is not bound by the Redis/Postgres budget; it has a timeout of its own, and the calls after it a fresh budget.
	callCtx, cancel := context.WithTimeout(outerContext(ctx), githubSignInTimeout)
	id, err := s.deps.GitHub.Identify(callCtx, s.githubCallbackURL(), code, start.Verifier)
	cancel()
	if err != nil {
		s.log.WarnContext(ctx, "github sign-in: no identity from GitHub", "err", err)
		return refuse(githubErrUnavailable)
	}
	ctx, cancel = context.WithTimeout(outerContext(ctx), requestBudget)
	defer cancel()

	if _, err := s.state.LookupPending(ctx, userCode, s.now()); err != nil {
		if errors.Is(err, ErrUnknownCode) || errors.Is(err, ErrAlreadyResolved) {
			return refuse(githubErrCodeNotPending, "github_user_id", id.ID)
		}
		return err
	}
	acct, matchedBy, reason, err := s.githubAccount(ctx, id)
	if err != nil {
		return err
	}
	if reason != "" {
		return refuse(reason, "github_user_id", id.ID, "github_login", id.Login, "account_id", acct.ID)
	}
	value, err := s.envelopes().signGitHubSession(acct.ID, id.Login, userCode)
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "github sign-in", "account_id", acct.ID, "github_user_id", id.ID, "matched_by", matchedBy)
	http.SetCookie(w, s.githubCookie(githubSessionCookieName, value, approvalGrantCookiePath, int(githubSessionTTL/time.Second)))
	http.Redirect(w, r, s.pageURL("github_verified", "1"), http.StatusFound)
	return nil
}

// githubAccount finds the Dify account a GitHub identity approves as, never creating one: the account Dify linked to the
// GitHub user (account_integrates; github.com users only, see github.Identity.OpenID), else the account holding the
// identity's matching email (github.MatchingEmail: a verified address, never a noreply one), looked up exactly as every
// branch looks emails up (Directory.AccountByEmail). The account must be active. A non-empty reason refuses, naming what
// was missing.
func (s *Server) githubAccount(ctx context.Context, id github.Identity) (acct directory.Account, matchedBy, reason string,
	err error) {
	err = directory.ErrNotFound
	if id.OpenID != "" {
		acct, err = s.deps.Directory.AccountByOpenID(ctx, directory.ProviderGitHub, id.OpenID)
	}
	matchedBy = "link"
	if errors.Is(err, directory.ErrNotFound) {
		if id.Email == "" {
			return directory.Account{}, "", githubErrNoEmail, nil
		}
		acct, err = s.deps.Directory.AccountByEmail(ctx, id.Email)
		matchedBy = "email"
		if errors.Is(err, directory.ErrNotFound) {
			return directory.Account{}, "", githubErrNoAccount, nil
		}
	}
	if err != nil {
		return directory.Account{}, "", "", err
	}
	if acct.Status != directory.AccountStatusActive {
		return acct, matchedBy, githubErrInactive, nil
	}
	return acct, matchedBy, "", nil
}

// githubSessionFromCookie verifies the GitHub session cookie; ok is false when there is none.
func (s *Server) githubSessionFromCookie(r *http.Request) (sess githubSession, ok bool, err error) {
	c, cerr := r.Cookie(githubSessionCookieName)
	if cerr != nil || c.Value == "" {
		return githubSession{}, false, nil
	}
	sess, err = s.envelopes().verifyGitHubSession(c.Value)
	if err != nil {
		s.log.WarnContext(r.Context(), "github session refused", "route", r.Pattern, "reason", err)
		return githubSession{}, true, err
	}
	return sess, true, nil
}

// githubContextJSON is what the page shows before a GitHub-signed-in person approves: who they approve as, and the same
// device context as /device/details (RFC 8628 §5.4).
type githubContextJSON struct {
	AccountEmail string `json:"account_email"`
	AccountName  string `json:"account_name"`
	GitHubLogin  string `json:"github_login"`
	UserCode     string `json:"user_code"`
	CSRFToken    string `json:"csrf_token"`
	ExpiresAt    string `json:"expires_at"`
	deviceContext
}

// handleGitHubContext: GET /oauth/device/github/context. The code comes from the signed session, not from the caller, so an
// unknown one is not a guess to charge.
func (s *Server) handleGitHubContext(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	noStore(w)
	sess, present, err := s.githubSessionFromCookie(r)
	if !present || err != nil {
		return errorf(http.StatusUnauthorized, codeLoginRequired, "no GitHub sign-in, or it expired; sign in with GitHub again")
	}
	a, err := s.state.LookupPending(ctx, sess.UserCode, s.now())
	if err != nil {
		return notPendingError(err)
	}
	acct, err := s.deps.Directory.Account(ctx, sess.AccountID)
	if errors.Is(err, directory.ErrNotFound) {
		return errorf(http.StatusUnauthorized, codeLoginRequired, "the signed-in account does not exist")
	}
	if err != nil {
		return err
	}
	if acct.Status != directory.AccountStatusActive {
		return accountInactive()
	}
	writeJSON(w, http.StatusOK, githubContextJSON{
		AccountEmail: acct.Email, AccountName: acct.Name, GitHubLogin: sess.GitHubLogin, UserCode: sess.UserCode,
		CSRFToken: sess.CSRFToken, ExpiresAt: sess.expiry().UTC().Format(time.RFC3339), deviceContext: contextOf(a),
	})
	return nil
}

// audGitHubSession is the audience of the GitHub session cookie, so no other envelope can stand in for it.
const (
	audGitHubSession = "api.device_flow.github_session"
	githubSessionTTL = 5 * time.Minute
)

// githubSession is the device_github_session cookie: the Dify account a GitHub sign-in proved, bound to one user code, with
// the CSRF token approve and deny must carry, for 5 minutes.
type githubSession struct {
	envelopeTimes
	AccountID   string `json:"account_id"`
	GitHubLogin string `json:"github_login"`
	UserCode    string `json:"user_code"`
	CSRFToken   string `json:"csrf_token"`
}

func (k envelopeKeys) signGitHubSession(accountID, login, userCode string) (string, error) {
	g := githubSession{AccountID: accountID, GitHubLogin: login, UserCode: userCode, CSRFToken: newSSONonce()}
	g.stamp(audGitHubSession, k.now(), githubSessionTTL)
	return k.sign(g)
}

func (k envelopeKeys) verifyGitHubSession(token string) (githubSession, error) {
	var g githubSession
	if err := k.verify(token, audGitHubSession, &g); err != nil {
		return githubSession{}, err
	}
	if _, ok := ids.Canonical(g.AccountID); !ok {
		return githubSession{}, fmt.Errorf("%w: claim account_id is not a UUID", errInvalidEnvelope)
	}
	if _, ok := normalizeUserCode(g.UserCode); !ok {
		return githubSession{}, fmt.Errorf("%w: claim user_code is not a code", errInvalidEnvelope)
	}
	if err := errors.Join(checkLen("github_login", g.GitHubLogin, 0, 255), checkLen("csrf_token", g.CSRFToken, 16, 128)); err != nil {
		return githubSession{}, fmt.Errorf("%w: %w", errInvalidEnvelope, err)
	}
	return g, nil
}
