package deviceflow

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// The SSO branch (EE): the browser goes to the enterprise IdP with a signed state, comes back with a signed assertion of an
// external subject, trades it for a 5-minute approval-grant cookie, and approves or denies with that cookie and its CSRF token.
const (
	approvalGrantCookieName = "device_approval_grant"
	ssoStartStateCookieName = "device_sso_state"
	approvalGrantCookiePath = apiPrefix + "/oauth/device"
	ssoCompletePath         = apiPrefix + "/oauth/device/sso-complete"
	devicePagePath          = "/device"
	csrfHeader              = "X-CSRF-Token"
	// ssoInitiateTimeout bounds the enterprise call while a browser waits for its redirect.
	ssoInitiateTimeout = 5 * time.Second
)

// enterpriseOnly hides a route on CE: it answers 404 as if it did not exist, before any rate limit counts the request.
func (s *Server) enterpriseOnly(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !s.cfg.EnterpriseEnabled || s.deps.Enterprise == nil {
			return errorf(http.StatusNotFound, codeNotFound, "no such endpoint")
		}
		return h(w, r)
	}
}

func (s *Server) envelopes() envelopeKeys { return newEnvelopeKeys(s.cfg.SecretKey, s.now) }

func (s *Server) nonces() nonceLedger { return nonceLedger{rdb: s.deps.Redis, now: s.now} }

// handleSSOInitiateLink: GET /oauth/device/sso-initiate?user_code=. A link must not start SSO: a person already signed in
// at the IdP would come back to "Authorize this device?" one click after opening a link someone sent. The link leads to the
// /device page instead, where the code is confirmed and SSO is started from the page (handleSSOInitiate). Nothing is looked
// up, so nothing is charged.
func (s *Server) handleSSOInitiateLink(w http.ResponseWriter, r *http.Request) error {
	target := s.cfg.ConsoleWebURL + devicePagePath
	if code, ok := normalizeUserCode(r.URL.Query().Get("user_code")); ok {
		target = s.pageURL("user_code", code)
	}
	noStore(w)
	http.Redirect(w, r, target, http.StatusSeeOther)
	return nil
}

// handleSSOInitiate: POST /oauth/device/sso-initiate with user_code and state → {"url": the IdP URL the enterprise service
// names}; the page navigates there. The state must be the nonce of the device_sso_state cookie the /device page set
// (double submit of a signed, short-lived cookie, SameSite=Lax): another site cannot read it, and its form posts do not carry
// the cookie. The answer is JSON rather than a redirect because the page's CSP (form-action 'self') rightly forbids a form
// from being redirected to another origin.
func (s *Server) handleSSOInitiate(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	userCode, err := s.startFromPage(w, r, limitSSOInitiate)
	if err != nil {
		return err
	}
	signed, err := s.envelopes().signState(userCode, newSSONonce(), s.cfg.ConsoleAPIURL+ssoCompletePath)
	if err != nil {
		return err
	}
	// The enterprise service is not bound by the Redis/Postgres budget; it has a timeout of its own.
	callCtx, cancel := context.WithTimeout(outerContext(ctx), ssoInitiateTimeout)
	defer cancel()
	target, err := s.deps.Enterprise.SSOInitiate(callCtx, signed)
	if err == nil {
		err = s.checkIdPURL(target)
	}
	if err != nil {
		s.log.WarnContext(ctx, "sso-initiate: no IdP URL from the enterprise service", "err", err)
		return errorf(http.StatusBadGateway, codeSSOInitiateFailed, "the SSO provider could not be reached; try again later")
	}
	noStore(w)
	// A grant left over from another tab must not approve this code.
	http.SetCookie(w, s.deviceCookie(approvalGrantCookieName, "", -1))
	writeJSON(w, http.StatusOK, struct {
		URL string `json:"url"`
	}{target})
	return nil
}

// startStateFor returns the nonce the /device page puts in its SSO form, and sets the device_sso_state cookie that carries it
// signed. A valid cookie keeps its nonce (another open tab of the page stays usable) and gets a fresh expiry.
func (s *Server) startStateFor(w http.ResponseWriter, r *http.Request) (string, error) {
	nonce := ""
	if c, err := r.Cookie(ssoStartStateCookieName); err == nil {
		if st, err := s.envelopes().verifyStartState(c.Value); err == nil {
			nonce = st.Nonce
		}
	}
	if nonce == "" {
		nonce = newSSONonce()
	}
	signed, err := s.envelopes().signStartState(nonce)
	if err != nil {
		return "", err
	}
	http.SetCookie(w, s.deviceCookie(ssoStartStateCookieName, signed, int(ssoStartStateTTL/time.Second)))
	return nonce, nil
}

// startFromPage is what starting a sign-in from the /device page (SSO, GitHub) checks before it starts one, in this order;
// the first failure answers. The body's user_code and state; state the nonce of the page's device_sso_state cookie
// (checkStartState); the start limit l per address; the failed-lookup budget; the code well-formed (else charged, 400
// invalid_user_code) and pending (an unknown one charged, 404; one resolved already, 409). It returns the normalised code.
func (s *Server) startFromPage(w http.ResponseWriter, r *http.Request, l limit) (string, error) {
	ctx := r.Context()
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return "", apiErr
	}
	raw, apiErr := p.str("user_code")
	if apiErr != nil {
		return "", apiErr
	}
	state, apiErr := p.str("state")
	if apiErr != nil {
		return "", apiErr
	}
	if apiErr := s.checkStartState(r, state); apiErr != nil {
		return "", apiErr
	}
	if err := s.allow(ctx, w, l, s.clientBucket(r)); err != nil {
		return "", err
	}
	if err := s.checkGuesses(ctx, w, r); err != nil {
		return "", err
	}
	userCode, ok := normalizeUserCode(raw)
	if !ok {
		if err := s.chargeGuess(ctx, r); err != nil {
			return "", err
		}
		return "", errorf(http.StatusBadRequest, codeInvalidUserCode, "user_code is missing or malformed")
	}
	if _, err := s.state.LookupPending(ctx, userCode, s.now()); err != nil {
		if errors.Is(err, ErrUnknownCode) {
			return "", s.unknownCode(ctx, r)
		}
		return "", pendingCodeError(err)
	}
	return userCode, nil
}

// checkStartState requires the state field to be the nonce of a valid device_sso_state cookie: only the /device page starts
// SSO or a GitHub sign-in.
func (s *Server) checkStartState(r *http.Request, field string) *apiError {
	invalid := errorf(http.StatusForbidden, codeCSRFInvalid, "start signing in from the device page; reload it and try again")
	c, err := r.Cookie(ssoStartStateCookieName)
	if err != nil || c.Value == "" || field == "" {
		return invalid
	}
	st, err := s.envelopes().verifyStartState(c.Value)
	if err != nil || subtle.ConstantTimeCompare([]byte(st.Nonce), []byte(field)) != 1 {
		return invalid
	}
	return nil
}

// checkIdPURL accepts only an absolute https URL (http only when deviceflow itself is served over http, i.e. a dev setup).
func (s *Server) checkIdPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	allowHTTP := isHTTP(s.cfg.ConsoleAPIURL)
	if u.Host == "" || !(u.Scheme == "https" || (allowHTTP && u.Scheme == "http")) {
		return errors.New("the IdP URL is not an absolute https URL")
	}
	return nil
}

func isHTTP(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.Scheme == "http"
}

// handleSSOComplete: GET /oauth/device/sso-complete?sso_assertion= (and /device/sso-complete). The assertion is a credential:
// it is never logged, and every refusal names only the reason.
func (s *Server) handleSSOComplete(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	assertion, err := s.envelopes().verifyAssertion(r.URL.Query().Get("sso_assertion"))
	if err != nil {
		s.log.WarnContext(ctx, "sso-complete: assertion refused", "reason", err)
		return errorf(http.StatusBadRequest, codeInvalidSSOAssertion, "the SSO assertion is invalid or expired")
	}
	first, err := s.nonces().consume(ctx, assertionNonceKeyPrefix, assertion.Nonce, assertion.expiry())
	if err != nil {
		return err
	}
	if !first {
		s.log.WarnContext(ctx, "sso-complete: assertion refused", "reason", "replayed nonce")
		return errorf(http.StatusBadRequest, codeInvalidSSOAssertion, "the SSO assertion was already used")
	}
	userCode, ok := normalizeUserCode(assertion.UserCode)
	if !ok {
		return errorf(http.StatusConflict, codeUserCodeNotPending, "the code is not waiting for approval")
	}
	subject := tokens.ExternalSubject(assertion.Email, assertion.Issuer)
	switch err := s.pendingForExternal(r, userCode, subject); {
	case errors.Is(err, errEmailIsDifyAccount):
		noStore(w)
		http.Redirect(w, r, s.pageURL("sso_error", codeEmailIsDifyAccount), http.StatusFound)
		return nil
	case err != nil:
		return err
	}
	value, _, err := s.envelopes().signGrant(s.cfg.ConsoleAPIURL, subject.Email, subject.Issuer, userCode)
	if err != nil {
		return err
	}
	noStore(w)
	http.SetCookie(w, s.deviceCookie(approvalGrantCookieName, value, int(approvalGrantTTL/time.Second)))
	http.Redirect(w, r, s.pageURL("sso_verified", "1"), http.StatusFound)
	return nil
}

// pageURL is the /device page of the console with one fixed parameter; redirect targets never come from the request.
func (s *Server) pageURL(name, value string) string {
	return s.cfg.ConsoleWebURL + devicePagePath + "?" + url.Values{name: {value}}.Encode()
}

// deviceCookie builds the SSO branch's cookies (the approval grant, the start state): sent only to the device-flow API,
// never readable by script, not sent by other sites' form posts; maxAge < 0 deletes it.
func (s *Server) deviceCookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     approvalGrantCookiePath,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   !isHTTP(s.cfg.ConsoleAPIURL),
		SameSite: http.SameSiteLaxMode,
	}
}

// grantFromCookie verifies the approval-grant cookie; any problem is 401 invalid_session.
func (s *Server) grantFromCookie(r *http.Request) (approvalGrant, error) {
	c, err := r.Cookie(approvalGrantCookieName)
	if err != nil || c.Value == "" {
		return approvalGrant{}, errorf(http.StatusUnauthorized, codeInvalidSession, "no SSO approval session; sign in with SSO again")
	}
	g, err := s.envelopes().verifyGrant(c.Value)
	if err != nil {
		s.log.WarnContext(r.Context(), "approval grant refused", "route", r.Pattern, "reason", err)
		return approvalGrant{}, errorf(http.StatusUnauthorized, codeInvalidSession, "the SSO approval session is invalid or expired")
	}
	return g, nil
}

// approvalContext is what the SSO approval screen shows: the verified subject, and the same device context as the account
// branch's /device/details (RFC 8628 §5.4), so a person can tell a request someone else started.
type approvalContext struct {
	SubjectEmail  string `json:"subject_email"`
	SubjectIssuer string `json:"subject_issuer"`
	UserCode      string `json:"user_code"`
	CSRFToken     string `json:"csrf_token"`
	ExpiresAt     string `json:"expires_at"`
	deviceContext
}

// handleApprovalContext: GET /oauth/device/approval-context. Reading the context does not use up the grant. The code comes
// from the signed grant, not from the caller, so an unknown one is not a guess to charge.
func (s *Server) handleApprovalContext(w http.ResponseWriter, r *http.Request) error {
	noStore(w)
	g, err := s.grantFromCookie(r)
	if err != nil {
		return err
	}
	a, err := s.state.LookupPending(r.Context(), g.UserCode, s.now())
	if err != nil {
		return notPendingError(err)
	}
	writeJSON(w, http.StatusOK, approvalContext{
		SubjectEmail: g.SubjectEmail, SubjectIssuer: g.SubjectIssuer, UserCode: g.UserCode, CSRFToken: g.CSRFToken,
		ExpiresAt: g.expiry().UTC().Format(time.RFC3339), deviceContext: contextOf(a),
	})
	return nil
}

func (s *Server) handleApproveExternal(w http.ResponseWriter, r *http.Request) error {
	return s.resolveExternal(w, r, StatusApproved)
}

func (s *Server) handleDenyExternal(w http.ResponseWriter, r *http.Request) error {
	return s.resolveExternal(w, r, StatusDenied)
}

// resolveExternal runs the checks of approve-external and deny-external in a fixed order (grant cookie, rate limit, CSRF,
// user code, pending, not a Dify account, single-use nonce); the first failure answers.
func (s *Server) resolveExternal(w http.ResponseWriter, r *http.Request, to Status) error {
	ctx := r.Context()
	g, err := s.grantFromCookie(r)
	if err != nil {
		return err
	}
	if to == StatusApproved {
		if err := s.allow(ctx, w, limitApproveExtMail, g.SubjectEmail); err != nil {
			return err
		}
	}
	if got := r.Header.Get(csrfHeader); got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(g.CSRFToken)) != 1 {
		return errorf(http.StatusForbidden, codeCSRFInvalid, "the X-CSRF-Token header does not match the SSO approval session")
	}
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return apiErr
	}
	raw, apiErr := p.str("user_code")
	if apiErr != nil {
		return apiErr
	}
	if userCode, ok := normalizeUserCode(raw); !ok || userCode != g.UserCode {
		return errorf(http.StatusBadRequest, codeUserCodeMismatch, "user_code is not the code this SSO session was started for")
	}
	subject := tokens.ExternalSubject(g.SubjectEmail, g.SubjectIssuer)
	switch err := s.pendingForExternal(r, g.UserCode, subject); {
	case errors.Is(err, errEmailIsDifyAccount):
		return errorf(http.StatusForbidden, codeEmailIsDifyAccount, "this email belongs to a Dify account; sign in with it instead")
	case err != nil:
		return err
	}
	first, err := s.nonces().consume(ctx, grantNonceKeyPrefix, g.Nonce, g.expiry())
	if err != nil {
		return err
	}
	if !first {
		return errorf(http.StatusUnauthorized, codeSessionAlreadyUsed, "this SSO approval session was already used")
	}
	resolved, err := s.state.Resolve(ctx, g.UserCode, to, subject, s.now())
	again := errors.Is(err, errResolvedAgain) // this subject already resolved it the same way: the same answer, audited once
	if err != nil && !again {
		return notPendingError(err)
	}
	event := auditDeviceApproved
	if to == StatusDenied {
		event = auditDeviceDenied
	}
	if !again {
		s.audit(ctx, event, "subject_type", string(subject.Type), "subject_email", subject.Email,
			"subject_issuer", subject.Issuer,
			"client_id", resolved.ClientID, "device_label", resolved.DeviceLabel, "ip", s.clientIP(r).String())
	}
	noStore(w)
	http.SetCookie(w, s.deviceCookie(approvalGrantCookieName, "", -1))
	writeJSON(w, http.StatusOK, struct {
		Status Status `json:"status"`
	}{to})
	return nil
}

// errEmailIsDifyAccount: pendingForExternal refused (and audited) an external subject with a Dify account's email; each
// step answers it in its own way.
var errEmailIsDifyAccount = errors.New("the email belongs to a Dify account")

// pendingForExternal is the rule both SSO steps (sso-complete, approve/deny-external) apply to the code an external subject
// resolves: it must still be pending, and the subject's email must not be a Dify account's (errEmailIsDifyAccount, audited
// as a rejected flow).
func (s *Server) pendingForExternal(r *http.Request, userCode string, subject tokens.Subject) error {
	a, err := s.state.LookupPending(r.Context(), userCode, s.now())
	if err != nil {
		return notPendingError(err)
	}
	isAccount, err := s.isDifyAccountEmail(r.Context(), subject.Email)
	if err != nil {
		return err
	}
	if isAccount {
		s.auditExternalRejected(r, a, subject, codeEmailIsDifyAccount)
		return errEmailIsDifyAccount
	}
	return nil
}

// isDifyAccountEmail: an external subject may not use the email of any Dify account (whatever its status), or it could
// act as that account's owner under another identity.
func (s *Server) isDifyAccountEmail(ctx context.Context, email string) (bool, error) {
	_, err := s.deps.Directory.AccountByEmail(ctx, email)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, directory.ErrNotFound):
		return false, nil
	}
	return false, err
}

func (s *Server) auditExternalRejected(r *http.Request, a Authorization, subject tokens.Subject, reason string) {
	s.audit(r.Context(), auditFlowRejected, "subject_type", string(subject.Type), "subject_email", subject.Email,
		"subject_issuer", subject.Issuer, "client_id", a.ClientID, "device_label", a.DeviceLabel, "reason", reason,
		"ip", s.clientIP(r).String())
}

// pendingCodeError translates a failed pending lookup before SSO starts (an unknown code is answered by unknownCode).
func pendingCodeError(err error) error {
	if errors.Is(err, ErrAlreadyResolved) {
		return errorf(http.StatusConflict, codeUserCodeNotPending, "the code was already approved or denied")
	}
	return err
}

// notPendingError translates a failed pending lookup or resolve once SSO is done: the code is no longer pending.
func notPendingError(err error) error {
	if errors.Is(err, ErrUnknownCode) || errors.Is(err, ErrAlreadyResolved) {
		return errorf(http.StatusConflict, codeUserCodeNotPending, "the code is not waiting for approval")
	}
	return err
}
