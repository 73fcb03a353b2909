package deviceflow

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/authgate/authgate/internal/tokens"
)

// caller is the token a request authenticated with.
type caller struct {
	Token tokens.Token
	Hash  string
}

// bearer authenticates the Authorization: Bearer token (RFC 6750) against Postgres, the source of truth: a revoked token
// has no live row. An expired one is hard-expired on the spot.
func (s *Server) bearer(w http.ResponseWriter, r *http.Request) (caller, error) {
	ctx := r.Context()
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return caller{}, invalidToken(w, "a bearer token is required")
	}
	raw = strings.TrimSpace(raw)
	if _, err := tokens.Parse(raw); err != nil {
		return caller{}, invalidToken(w, "the bearer token is malformed")
	}
	hash := tokens.Hash(raw)
	t, err := s.deps.Tokens.LookupByHash(ctx, hash)
	if errors.Is(err, tokens.ErrNotFound) {
		return caller{}, invalidToken(w, "the bearer token is unknown or revoked")
	}
	if err != nil {
		return caller{}, err
	}
	now := s.now()
	if t.Expired(now) {
		if err := s.hardExpire(ctx, t, hash); err != nil {
			return caller{}, err
		}
		return caller{}, invalidToken(w, "the bearer token has expired")
	}
	return caller{Token: t, Hash: hash}, nil
}

// hardExpire revokes an expired token once; only the caller whose compare-and-set hit the row emits the audit event.
func (s *Server) hardExpire(ctx context.Context, t tokens.Token, hash string) error {
	hit, err := s.deps.Tokens.HardExpire(ctx, t.ID, s.now())
	if err != nil || !hit {
		return err
	}
	if err := s.deps.Revoker.Revoke(ctx, hash); err != nil {
		s.log.ErrorContext(ctx, "deviceflow: tombstoning an expired token failed", "token_id", t.ID, "err", err)
	}
	s.audit(ctx, auditTokenExpired, "token_id", t.ID, "client_id", t.ClientID, "subject_email", t.SubjectEmail,
		"subject_issuer", t.SubjectIssuer, "account_id", t.AccountID)
	return nil
}

func invalidToken(w http.ResponseWriter, message string) *apiError {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	return errorf(http.StatusUnauthorized, codeInvalidToken, message)
}
