package deviceflow

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// handleApprove and handleDeny resolve a pending code for the signed-in Dify account (account branch): signed in to the Dify
// console, or through the page's GitHub sign-in. No token is minted here: the poll that consumes the approval mints it, so no plaintext token ever rests in Redis.
func (s *Server) handleApprove(w http.ResponseWriter, r *http.Request) error {
	return s.resolveForAccount(w, r, StatusApproved)
}

func (s *Server) handleDeny(w http.ResponseWriter, r *http.Request) error {
	return s.resolveForAccount(w, r, StatusDenied)
}

// resolveForAccount is the account branch, however the account signed in (accountApprover): the checks below run in this
// order for both, and the first failure answers.
func (s *Server) resolveForAccount(w http.ResponseWriter, r *http.Request, to Status) error {
	ctx := r.Context()
	ap, apiErr := s.accountApprover(r)
	reject := func(apiErr *apiError, attrs ...any) error {
		s.audit(ctx, auditFlowRejected, append([]any{"reason", apiErr.Code, "branch", "account", "via", ap.via,
			"client_ip", s.clientIP(r).String()}, attrs...)...)
		return apiErr
	}
	if apiErr != nil {
		if ap.accountID != "" {
			return reject(apiErr, "account_id", ap.accountID)
		}
		return reject(apiErr)
	}
	userID := ap.accountID
	if err := s.allow(ctx, w, s.limitApprove(), userID); err != nil {
		return err
	}
	acct, err := s.deps.Directory.Account(ctx, userID)
	if errors.Is(err, directory.ErrNotFound) {
		return reject(errorf(http.StatusUnauthorized, codeLoginRequired, "the session's account does not exist"), "account_id", userID)
	}
	if err != nil {
		return err
	}
	if acct.Status != directory.AccountStatusActive {
		return reject(accountInactive(), "account_id", userID)
	}
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return apiErr
	}
	raw, apiErr := p.str("user_code")
	if apiErr != nil {
		return apiErr
	}
	if raw == "" {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "user_code is required")
	}
	if ap.userCode != "" {
		// A GitHub session approves only the code it was signed in for.
		if code, ok := normalizeUserCode(raw); !ok || code != ap.userCode {
			return reject(errorf(http.StatusBadRequest, codeUserCodeMismatch,
				"user_code is not the code this GitHub sign-in was started for"), "account_id", userID)
		}
	}
	if err := s.checkGuesses(ctx, w, r); err != nil {
		return err
	}
	code, ok := normalizeUserCode(raw)
	if !ok {
		return s.unknownCode(ctx, r)
	}
	a, err := s.state.Resolve(ctx, code, to, tokens.AccountSubject(acct.ID, acct.Email), s.now())
	switch {
	case errors.Is(err, ErrUnknownCode):
		return s.unknownCode(ctx, r)
	case errors.Is(err, ErrAlreadyResolved):
		return errorf(http.StatusConflict, codeAlreadyResolved, "the code was already approved or denied")
	case errors.Is(err, errResolvedAgain):
		// A retry of this very approval or denial (its first answer was lost): the same answer, audited once.
	case err != nil:
		return err
	default:
		event := auditDeviceApproved
		if to == StatusDenied {
			event = auditDeviceDenied
		}
		s.audit(ctx, event, "branch", "account", "via", ap.via, "account_id", acct.ID,
			"subject_email", tokens.NormalizeEmail(acct.Email), "client_id", a.ClientID, "device_label", a.DeviceLabel,
			"creator_ip", a.CreatorIP, "client_ip", s.clientIP(r).String())
	}
	if ap.via == viaGitHub {
		// The GitHub session was for this code, which is resolved now.
		noStore(w)
		http.SetCookie(w, s.githubCookie(githubSessionCookieName, "", approvalGrantCookiePath, -1))
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": string(to)})
	return nil
}

// approver is who approves or denies in the account branch, and how they signed in.
type approver struct {
	accountID string
	via       string // viaConsole or viaGitHub
	userCode  string // the code a GitHub session is bound to; "" for a console session
}

// accountApprover authenticates an account-branch approve or deny and checks its CSRF token. The Dify console session comes
// first, with Dify's CSRF check; without a valid one, and with GitHub sign-in on, a GitHub session cookie (githubsignin.go)
// with the CSRF token it carries (X-CSRF-Token equal to the cookie's csrf_token claim, the SSO grant's rule). The account id
// is set once the session is known, even when the CSRF check then fails.
func (s *Server) accountApprover(r *http.Request) (approver, *apiError) {
	userID, consoleErr := s.consoleUserID(r)
	if consoleErr == nil {
		return approver{accountID: userID, via: viaConsole}, s.checkCSRF(r, userID)
	}
	if s.deps.GitHub == nil {
		return approver{via: viaConsole}, consoleErr
	}
	sess, present, err := s.githubSessionFromCookie(r)
	switch {
	case !present:
		return approver{via: viaConsole}, consoleErr
	case err != nil:
		return approver{via: viaGitHub}, errorf(http.StatusUnauthorized, codeLoginRequired,
			"the GitHub sign-in expired or is invalid; sign in with GitHub again")
	}
	ap := approver{accountID: sess.AccountID, via: viaGitHub, userCode: sess.UserCode}
	if got := r.Header.Get(csrfHeader); got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRFToken)) != 1 {
		return ap, errorf(http.StatusForbidden, codeCSRFInvalid, "the CSRF token is missing or invalid")
	}
	return ap, nil
}

func expiredOrUnknown() *apiError {
	return errorf(http.StatusNotFound, codeExpiredOrUnknown, "the code is unknown or expired")
}

// unknownCode answers 404 expired_or_unknown for a typed user code, after charging it to the caller's failed-lookup budget.
func (s *Server) unknownCode(ctx context.Context, r *http.Request) error {
	if err := s.chargeGuess(ctx, r); err != nil {
		return err
	}
	return expiredOrUnknown()
}
