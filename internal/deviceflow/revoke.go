package deviceflow

import (
	"context"
	"errors"
	"net/http"

	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/tokens"
)

// handleRevokeSelf revokes the token the request is authenticated with (DELETE /oauth/authorizations/self and
// DELETE /account/sessions/self).
func (s *Server) handleRevokeSelf(w http.ResponseWriter, r *http.Request) error {
	c, err := s.bearer(w, r)
	if err != nil {
		return err
	}
	return s.revokeOwned(w, r, c.Token.Subject(), c.Token.ID, "self")
}

// handleRevokeSession revokes one of the caller's own sessions by id; another subject's id is 404, exactly like an unknown
// one, so ids of other people's sessions cannot be probed.
func (s *Server) handleRevokeSession(w http.ResponseWriter, r *http.Request) error {
	c, err := s.bearer(w, r)
	if err != nil {
		return err
	}
	id := r.PathValue("session_id")
	if !ids.Valid(id) {
		return sessionNotFound()
	}
	return s.revokeOwned(w, r, c.Token.Subject(), id, "session")
}

func (s *Server) revokeOwned(w http.ResponseWriter, r *http.Request, sub tokens.Subject, id, via string) error {
	_, err := s.revoke(r.Context(), sub, id, via)
	if errors.Is(err, tokens.ErrNotFound) {
		return sessionNotFound()
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revoke revokes a live token in Postgres, then tombstones its hash and publishes the revocation so extauthz replicas
// stop accepting it at once. If publishing fails the caller gets 503: the row is revoked, but the caches might still
// serve it until their TTL, and the operator must see that.
func (s *Server) revoke(ctx context.Context, sub tokens.Subject, id, via string) (tokens.Token, error) {
	t, err := s.deps.Tokens.Revoke(ctx, sub, id, s.now())
	if err != nil {
		return tokens.Token{}, err
	}
	s.audit(ctx, auditTokenRevoked, "token_id", t.ID, "client_id", t.ClientID, "subject_email", t.SubjectEmail,
		"subject_issuer", t.SubjectIssuer, "account_id", t.AccountID, "via", via)
	if t.TokenHash != "" {
		if err := s.deps.Revoker.Revoke(ctx, t.TokenHash); err != nil {
			return tokens.Token{}, err
		}
	}
	return t, nil
}

func sessionNotFound() *apiError {
	return errorf(http.StatusNotFound, codeNotFound, "no such session")
}

// handleRevoke is RFC 7009 token revocation for public clients: a token issued to the calling client is revoked; an
// unknown, malformed or already revoked token, or one issued to another client, is answered 200 as well (§2.2), so the
// endpoint tells nothing about tokens it did not revoke.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return apiErr
	}
	client, apiErr := clientFrom(r, p)
	if apiErr != nil {
		return apiErr
	}
	if apiErr := s.knownClient(client); apiErr != nil {
		return apiErr
	}
	raw, apiErr := p.str("token")
	if apiErr != nil {
		return apiErr
	}
	if raw == "" {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "token is required")
	}
	noStore(w)
	if _, err := tokens.Parse(raw); err != nil {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	t, err := s.deps.Tokens.LookupByHash(ctx, tokens.Hash(raw))
	switch {
	case errors.Is(err, tokens.ErrNotFound):
	case err != nil:
		return err
	case t.ClientID == client.ID:
		if _, err := s.revoke(ctx, t.Subject(), t.ID, "rfc7009"); err != nil && !errors.Is(err, tokens.ErrNotFound) {
			return err
		}
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
