package deviceflow

import (
	"errors"
	"math"
	"net/http"
)

type lookupResponse struct {
	Valid              bool   `json:"valid"`
	ExpiresInRemaining int    `json:"expires_in_remaining,omitempty"`
	ClientID           string `json:"client_id,omitempty"`
	DeviceLabel        string `json:"device_label,omitempty"`
}

// handleLookup tells the /device page whether a typed user code is pending. Guessing codes is what this endpoint invites,
// so unknown codes spend the per-IP budget of failures (limits.go) besides the per-IP request limit.
func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	noStore(w) // a shared cache must not hand one person's device label and client to another
	if err := s.checkGuesses(ctx, w, r); err != nil {
		return err
	}
	if err := s.allow(ctx, w, limitLookup, s.clientBucket(r)); err != nil {
		return err
	}
	now := s.now()
	code, ok := normalizeUserCode(r.URL.Query().Get("user_code"))
	var a Authorization
	var err error
	if ok {
		a, err = s.state.LookupPending(ctx, code, now)
	}
	switch {
	case !ok || errors.Is(err, ErrUnknownCode):
		if err := s.chargeGuess(ctx, r); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, lookupResponse{Valid: false})
		return nil
	case errors.Is(err, ErrAlreadyResolved):
		writeJSON(w, http.StatusOK, lookupResponse{Valid: false})
		return nil
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusOK, lookupResponse{
		Valid:              true,
		ExpiresInRemaining: int(math.Ceil(a.ExpiresAt.Sub(now).Seconds())),
		ClientID:           a.ClientID,
		DeviceLabel:        a.DeviceLabel,
	})
	return nil
}
