package deviceflow

import (
	"errors"
	"math"
	"net/http"
	"time"
)

// pageSignedIn reports whether the request carries a valid Dify console session; the page then skips the chooser.
func (s *Server) pageSignedIn(r *http.Request) bool {
	_, apiErr := s.consoleUserID(r)
	return apiErr == nil
}

// deviceContext is what every authorize view (console session, GitHub sign-in, SSO) shows of the login it would approve
// (RFC 8628 §5.4): its client and device label, and when and from which address it started, so a person can tell a login
// someone else started.
type deviceContext struct {
	ClientID    string `json:"client_id"`
	DeviceLabel string `json:"device_label"`
	CreatedAt   string `json:"created_at"`
	CreatorIP   string `json:"creator_ip"`
}

func contextOf(a Authorization) deviceContext {
	return deviceContext{ClientID: a.ClientID, DeviceLabel: a.DeviceLabel, CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339),
		CreatorIP: a.CreatorIP}
}

type deviceDetails struct {
	UserCode string `json:"user_code"`
	deviceContext
	ExpiresInRemaining int `json:"expires_in_remaining"`
}

// handleDeviceDetails: GET /device/details?user_code=. The authorize view shows when and from which address the request
// started (RFC 8628 §5.4), so a person can spot a code someone else started. Only a signed-in console user sees it, and
// it spends the same per-IP budgets as lookup: requests, and unknown codes.
func (s *Server) handleDeviceDetails(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	noStore(w)
	if _, apiErr := s.consoleUserID(r); apiErr != nil {
		return apiErr
	}
	if err := s.checkGuesses(ctx, w, r); err != nil {
		return err
	}
	if err := s.allow(ctx, w, limitLookup, s.clientBucket(r)); err != nil {
		return err
	}
	code, ok := normalizeUserCode(r.URL.Query().Get("user_code"))
	if !ok {
		return s.unknownCode(ctx, r)
	}
	now := s.now()
	a, err := s.state.LookupPending(ctx, code, now)
	switch {
	case errors.Is(err, ErrUnknownCode):
		return s.unknownCode(ctx, r)
	case errors.Is(err, ErrAlreadyResolved):
		return errorf(http.StatusConflict, codeAlreadyResolved, "the code was already approved or denied")
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusOK, deviceDetails{
		UserCode:           a.UserCode,
		deviceContext:      contextOf(a),
		ExpiresInRemaining: int(math.Ceil(a.ExpiresAt.Sub(now).Seconds())),
	})
	return nil
}
