package deviceflow

import (
	"errors"
	"net/http"
	"time"
)

type meResponse struct {
	SubjectType   string `json:"subject_type"`
	SubjectEmail  string `json:"subject_email"`
	SubjectIssuer string `json:"subject_issuer"`
	profile
	TokenID   string    `json:"token_id"`
	ClientID  string    `json:"client_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// handleMe describes the caller's token and subject (GET /me and GET /account).
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.bearer(w, r)
	if err != nil {
		return err
	}
	if err := s.allow(ctx, w, limitMe, c.Hash); err != nil {
		return err
	}
	sub := c.Token.Subject()
	prof, err := s.profileOf(ctx, sub)
	if errors.Is(err, errAccountGone) {
		return accountInactive()
	}
	if err != nil {
		return err
	}
	noStore(w)
	writeJSON(w, http.StatusOK, meResponse{
		SubjectType:   string(sub.Type),
		SubjectEmail:  c.Token.SubjectEmail,
		SubjectIssuer: c.Token.SubjectIssuer,
		profile:       prof,
		TokenID:       c.Token.ID,
		ClientID:      c.Token.ClientID,
		ExpiresAt:     c.Token.ExpiresAt.UTC(),
	})
	return nil
}
