package deviceflow

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/tokens"
)

// handleRevokeSelf revokes the token the request is authenticated with (DELETE /oauth/authorizations/self and
// DELETE /account/sessions/self). Presented again after its revocation, the token gets the same 204: the client may be
// retrying a revocation whose answer it never got.
func (s *Server) handleRevokeSelf(w http.ResponseWriter, r *http.Request) error {
	c, rec, err := s.revocationBearer(w, r)
	if err != nil {
		return err
	}
	if rec != nil {
		s.publishRevocation(r.Context(), rec.Hash, rec.TokenID) // the first attempt may have failed to
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return s.revokeOwned(w, r, c.Token.Subject(), c.Token.ID, "self")
}

// handleRevokeSession revokes one of the caller's own sessions by id; another subject's id is 404, exactly like an unknown
// one, so ids of other people's sessions cannot be probed. An own session that is already revoked is 204, as is a retry
// presenting the very token that the first attempt revoked (its record names the session).
func (s *Server) handleRevokeSession(w http.ResponseWriter, r *http.Request) error {
	c, rec, err := s.revocationBearer(w, r)
	if err != nil {
		return err
	}
	id := r.PathValue("session_id")
	if rec != nil {
		if canonical, ok := ids.Canonical(id); !ok || canonical != rec.TokenID {
			// A revoked token proves nothing about any other session.
			return invalidToken(w, errBearerUnknown.Error())
		}
		s.publishRevocation(r.Context(), rec.Hash, rec.TokenID)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if !ids.Valid(id) {
		return sessionNotFound()
	}
	return s.revokeOwned(w, r, c.Token.Subject(), id, "session")
}

func (s *Server) revokeOwned(w http.ResponseWriter, r *http.Request, sub tokens.Subject, id, via string) error {
	_, err := s.revoke(r.Context(), sub, id, via)
	switch {
	case errors.Is(err, tokens.ErrAlreadyRevoked):
		// The subject's own session, revoked earlier (or by a concurrent request): the outcome the client asked for.
	case errors.Is(err, tokens.ErrNotFound):
		return sessionNotFound()
	case err != nil:
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revoke revokes a live token in Postgres, which records its hash in the same statement, then tombstones the hash and
// publishes the revocation so extauthz replicas stop accepting it at once. Once Postgres has committed, the revocation has
// happened: a failed publish is only a warning, because every extauthz replica reconciles its caches from that record.
func (s *Server) revoke(ctx context.Context, sub tokens.Subject, id, via string) (tokens.Token, error) {
	t, err := s.deps.Tokens.Revoke(ctx, sub, id, s.now())
	if err != nil {
		return tokens.Token{}, err
	}
	s.audit(ctx, auditTokenRevoked, "token_id", t.ID, "client_id", t.ClientID, "subject_email", t.SubjectEmail,
		"subject_issuer", t.SubjectIssuer, "account_id", t.AccountID, "via", via)
	if t.TokenHash != "" {
		s.publishRevocation(ctx, t.TokenHash, t.ID)
	}
	return t, nil
}

func sessionNotFound() *apiError {
	return errorf(http.StatusNotFound, codeNotFound, "no such session")
}

// Unknown tokens presented to RFC 7009 revocation are remembered for revokeMissTTL, so a repeated one costs Postgres nothing.
// A token unknown now cannot become live later (a mint commits before its token is handed out), and a revoked one is found
// by its record, so the only cost of the cache is memory: revokeMissEntries hashes at most.
const (
	revokeMissTTL     = 10 * time.Second
	revokeMissEntries = 10_000
)

// handleRevoke is RFC 7009 token revocation for public clients: a token issued to the calling client is revoked; an
// unknown, malformed or already revoked token, or one issued to another client, is answered 200 as well (§2.2), so the
// endpoint tells nothing about tokens it did not revoke. Since it takes no credential, every lookup is paid for: an address
// that presented too many unknown tokens is refused (429) before its next lookup, and unknown tokens are remembered.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return apiErr
	}
	client, apiErr := s.knownClient(r, p)
	if apiErr != nil {
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
	bucket := s.clientBucket(r)
	if err := s.checkBudget(ctx, w, limitRevokeUnknown, bucket, "revocation budget"); err != nil {
		return err
	}
	hash := tokens.Hash(raw)
	if _, known := s.revokeMisses.Get(hash); known {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	t, err := s.deps.Tokens.LookupByHash(ctx, hash)
	switch {
	case errors.Is(err, tokens.ErrNotFound):
		// Already out of service: if it was recently, publish it again, in case the revocation's own publish failed.
		rec, err := s.deps.Tokens.LookupRevoked(ctx, hash)
		switch {
		case err == nil:
			s.publishRevocation(ctx, rec.Hash, rec.TokenID)
		case errors.Is(err, tokens.ErrNotFound):
			s.revokeMisses.Add(hash, struct{}{})
			if err := s.chargeBudget(ctx, limitRevokeUnknown, bucket, "revocation budget"); err != nil {
				return err
			}
		default:
			return err
		}
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
