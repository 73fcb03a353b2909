package deviceflow

import (
	"context"
	"errors"
	"net/http"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// handleApprove and handleDeny resolve a pending code for the signed-in Dify account (account branch). No token is minted
// here: the poll that consumes the approval mints it, so no plaintext token ever rests in Redis.
func (s *Server) handleApprove(w http.ResponseWriter, r *http.Request) error {
	return s.resolveForAccount(w, r, StatusApproved)
}

func (s *Server) handleDeny(w http.ResponseWriter, r *http.Request) error {
	return s.resolveForAccount(w, r, StatusDenied)
}

func (s *Server) resolveForAccount(w http.ResponseWriter, r *http.Request, to Status) error {
	ctx := r.Context()
	reject := func(apiErr *apiError, attrs ...any) error {
		s.audit(ctx, auditFlowRejected, append([]any{"reason", apiErr.Code, "branch", "account", "client_ip", s.clientIP(r).String()}, attrs...)...)
		return apiErr
	}
	userID, apiErr := s.consoleUserID(r)
	if apiErr != nil {
		return reject(apiErr)
	}
	if apiErr := s.checkCSRF(r, userID); apiErr != nil {
		return reject(apiErr, "account_id", userID)
	}
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
		writeJSON(w, http.StatusOK, map[string]string{"status": string(to)})
		return nil
	case err != nil:
		return err
	}
	event := auditDeviceApproved
	if to == StatusDenied {
		event = auditDeviceDenied
	}
	s.audit(ctx, event, "branch", "account", "account_id", acct.ID, "subject_email", tokens.NormalizeEmail(acct.Email),
		"client_id", a.ClientID, "device_label", a.DeviceLabel, "creator_ip", a.CreatorIP, "client_ip", s.clientIP(r).String())
	writeJSON(w, http.StatusOK, map[string]string{"status": string(to)})
	return nil
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
