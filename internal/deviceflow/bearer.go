package deviceflow

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/authgate/authgate/internal/tokens"
)

// caller is the token a request authenticated with.
type caller struct {
	Token tokens.Token
	Hash  string
}

var (
	errBearerMissing   = errors.New("a bearer token is required")
	errBearerMalformed = errors.New("the bearer token is malformed")
	errBearerUnknown   = errors.New("the bearer token is unknown or revoked")
	errBearerExpired   = errors.New("the bearer token has expired")
)

// bearer authenticates the Authorization: Bearer token (RFC 6750) against Postgres, the source of truth: a revoked token
// has no live row. An expired one is hard-expired on the spot.
func (s *Server) bearer(w http.ResponseWriter, r *http.Request) (caller, error) {
	c, err := s.authenticate(r)
	if err != nil {
		return caller{}, bearerError(w, err)
	}
	return c, nil
}

// revocationBearer authenticates a revocation like bearer, and also accepts a token that a revocation already took out of
// service (recorded in Postgres): a client that retries a revocation whose answer it never got (a timeout, a 503) learns
// that it succeeded instead of being refused with 401. rec is then that record, and the caller can do nothing with it but
// confirm its own revocation. A token that expired or was replaced by a newer login is not a retried revocation: 401.
func (s *Server) revocationBearer(w http.ResponseWriter, r *http.Request) (c caller, rec *tokens.RevokedHash, err error) {
	c, err = s.authenticate(r)
	if !errors.Is(err, errBearerUnknown) {
		if err != nil {
			return caller{}, nil, bearerError(w, err)
		}
		return c, nil, nil
	}
	found, lerr := s.deps.Tokens.LookupRevoked(r.Context(), c.Hash)
	switch {
	case errors.Is(lerr, tokens.ErrNotFound) || lerr == nil && found.Reason != tokens.ReasonRevoked:
		return caller{}, nil, bearerError(w, err)
	case lerr != nil:
		return caller{}, nil, lerr
	}
	return caller{Hash: c.Hash}, &found, nil
}

// authenticate resolves the presented bearer to its live row. The errBearer* errors say why there is none; the caller's
// Hash is set from errBearerUnknown on. Any other error is a dependency failure.
func (s *Server) authenticate(r *http.Request) (caller, error) {
	ctx := r.Context()
	raw, outcome := tokens.ParseAuthorization(strings.Join(r.Header.Values("Authorization"), ","))
	switch outcome {
	case tokens.BearerMissing:
		return caller{}, errBearerMissing
	case tokens.BearerSeveral, tokens.BearerTooLarge:
		return caller{}, errBearerMalformed
	}
	if _, err := tokens.Parse(raw); err != nil {
		return caller{}, errBearerMalformed
	}
	hash := tokens.Hash(raw)
	t, err := s.deps.Tokens.LookupByHash(ctx, hash)
	if errors.Is(err, tokens.ErrNotFound) {
		return caller{Hash: hash}, errBearerUnknown
	}
	if err != nil {
		return caller{}, err
	}
	if t.Expired(s.now()) {
		if err := s.hardExpire(ctx, t, hash); err != nil {
			return caller{}, err
		}
		return caller{Hash: hash}, errBearerExpired
	}
	s.deps.LastUsed.Record(t.ID) // in memory only: the write happens later, off this request
	return caller{Token: t, Hash: hash}, nil
}

// bearerError turns authenticate's reasons into 401 invalid_token; anything else passes through (503).
func bearerError(w http.ResponseWriter, err error) error {
	for _, reason := range []error{errBearerMissing, errBearerMalformed, errBearerUnknown, errBearerExpired} {
		if errors.Is(err, reason) {
			return invalidToken(w, reason.Error())
		}
	}
	return err
}

// hardExpire takes an expired token out of service (tokens.HardExpire: only the caller whose compare-and-set hit the row
// writes the audit event), and that caller tells the caches at once.
func (s *Server) hardExpire(ctx context.Context, t tokens.Token, hash string) error {
	hit, err := tokens.HardExpire(ctx, s.deps.Tokens, s.log, t, s.now())
	if hit {
		s.publishRevocation(ctx, hash, t.ID)
	}
	return err
}

// publishRevocation tells the caches at once that hash, whose revocation Postgres has committed, is dead. The Revoker gives
// up quickly, and a failure is a warning, not an error for the client: the revocation is recorded in Postgres, and every
// extauthz replica's reconciler denies the hash and writes its tombstone within a second of Redis answering. It runs even if
// the client has gone away meanwhile.
func (s *Server) publishRevocation(ctx context.Context, hash, tokenID string) {
	if err := s.deps.Revoker.Revoke(context.WithoutCancel(ctx), hash); err != nil {
		s.throttle.Log(ctx, s.log, slog.LevelWarn, "publish-revocation",
			"deviceflow: publishing a revocation to Redis failed; extauthz reconciles it from Postgres",
			"token_id", tokenID, "err", err)
	}
}

func invalidToken(w http.ResponseWriter, message string) *apiError {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	return errorf(http.StatusUnauthorized, codeInvalidToken, message)
}
