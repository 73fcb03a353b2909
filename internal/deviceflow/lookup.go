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
// so unknown codes spend a per-IP budget of failures besides the per-IP request limit.
func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	bucket := s.clientBucket(r)
	failed, err := s.deps.Limiter.Exceeded(ctx, limitFailedLookup.prefix+bucket, limitFailedLookup.n, limitFailedLookup.window)
	if err != nil {
		return err
	}
	if !failed.Allowed {
		return tooMany(w, failed.RetryAfter)
	}
	if err := s.allow(ctx, w, limitLookup, bucket); err != nil {
		return err
	}
	now := s.now()
	code, ok := normalizeUserCode(r.URL.Query().Get("user_code"))
	var a Authorization
	if ok {
		a, err = s.state.LookupPending(ctx, code, now)
	}
	switch {
	case !ok || errors.Is(err, ErrUnknownCode):
		if err := s.deps.Limiter.Add(ctx, limitFailedLookup.prefix+bucket, limitFailedLookup.window); err != nil {
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
