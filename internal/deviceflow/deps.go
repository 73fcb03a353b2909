package deviceflow

import (
	"context"
	"errors"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/github"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/tokens"
)

// postgresTokens and postgresDirectory mark what the Postgres adapters return, other than their sentinels, as a Postgres
// failure, so the one place that answers 503 can tell which dependency failed, whichever handler made the call.
type postgresTokens struct{ tokens.Store }

func pgErr(op string, err error) error {
	if err == nil || errors.Is(err, tokens.ErrNotFound) || errors.Is(err, tokens.ErrAlreadyRevoked) ||
		errors.Is(err, tokens.ErrDeviceTaken) || errors.Is(err, directory.ErrNotFound) {
		return err
	}
	return postgresFailure(op, err)
}

func (p postgresTokens) Mint(ctx context.Context, req tokens.MintRequest) (tokens.Minted, error) {
	m, err := p.Store.Mint(ctx, req)
	return m, pgErr("mint token", err)
}

func (p postgresTokens) LookupByHash(ctx context.Context, hash string) (tokens.Token, error) {
	t, err := p.Store.LookupByHash(ctx, hash)
	return t, pgErr("look up token", err)
}

func (p postgresTokens) HardExpire(ctx context.Context, id string, now time.Time) (bool, error) {
	hit, err := p.Store.HardExpire(ctx, id, now)
	return hit, pgErr("hard-expire token", err)
}

func (p postgresTokens) Revoke(ctx context.Context, s tokens.Subject, id string, now time.Time) (tokens.Token, error) {
	t, err := p.Store.Revoke(ctx, s, id, now)
	return t, pgErr("revoke token", err)
}

func (p postgresTokens) ListLive(ctx context.Context, s tokens.Subject, now time.Time, pg tokens.Page) ([]tokens.Token, int, error) {
	ts, n, err := p.Store.ListLive(ctx, s, now, pg)
	return ts, n, pgErr("list tokens", err)
}

func (p postgresTokens) RevokedSince(ctx context.Context, since time.Time) ([]tokens.RevokedHash, error) {
	hs, err := p.Store.RevokedSince(ctx, since)
	return hs, pgErr("list revocations", err)
}

func (p postgresTokens) LookupRevoked(ctx context.Context, hash string) (tokens.RevokedHash, error) {
	h, err := p.Store.LookupRevoked(ctx, hash)
	return h, pgErr("look up revocation", err)
}

func (p postgresTokens) RecordLastUsed(ctx context.Context, uses []tokens.Use) (int, error) {
	n, err := p.Store.RecordLastUsed(ctx, uses)
	return n, pgErr("record last use", err)
}

func (p postgresTokens) Prune(ctx context.Context, cutoff time.Time, batchSize int) (int, error) {
	n, err := p.Store.Prune(ctx, cutoff, batchSize)
	return n, pgErr("prune tokens", err)
}

type postgresDirectory struct{ directory.Directory }

func (p postgresDirectory) AppWithTenant(ctx context.Context, appID string) (directory.App, directory.Tenant, bool, error) {
	app, tenant, found, err := p.Directory.AppWithTenant(ctx, appID)
	return app, tenant, found, pgErr("read app", err)
}

func (p postgresDirectory) Tenant(ctx context.Context, id string) (directory.Tenant, error) {
	t, err := p.Directory.Tenant(ctx, id)
	return t, pgErr("read tenant", err)
}

func (p postgresDirectory) Account(ctx context.Context, id string) (directory.Account, error) {
	a, err := p.Directory.Account(ctx, id)
	return a, pgErr("read account", err)
}

func (p postgresDirectory) AccountByEmail(ctx context.Context, email string) (directory.Account, error) {
	a, err := p.Directory.AccountByEmail(ctx, email)
	return a, pgErr("read account by email", err)
}

func (p postgresDirectory) AccountByOpenID(ctx context.Context, provider, openID string) (directory.Account, error) {
	a, err := p.Directory.AccountByOpenID(ctx, provider, openID)
	return a, pgErr("read account by open id", err)
}

func (p postgresDirectory) IsActiveMember(ctx context.Context, tenantID, accountID string) (bool, error) {
	ok, err := p.Directory.IsActiveMember(ctx, tenantID, accountID)
	return ok, pgErr("read membership", err)
}

func (p postgresDirectory) Workspaces(ctx context.Context, accountID string) ([]directory.Workspace, error) {
	ws, err := p.Directory.Workspaces(ctx, accountID)
	return ws, pgErr("read workspaces", err)
}

// The services deviceflow consumes besides its stores, as small interfaces (as the pipeline declares its own): the real
// ones are ratelimit.SlidingWindow, tokencache.Revoker and enterprise.Client.

// Limiter is a sliding-window limiter shared by all replicas.
type Limiter interface {
	// Allow checks and counts one request atomically; a denied request is not counted.
	Allow(ctx context.Context, key string, limit int, window time.Duration) (ratelimit.Decision, error)
	// Exceeded checks without counting.
	Exceeded(ctx context.Context, key string, limit int, window time.Duration) (ratelimit.Decision, error)
	// Add counts one event unconditionally.
	Add(ctx context.Context, key string, window time.Duration) error
}

// Revoker tombstones a revoked hash in the caches and publishes it to every replica.
type Revoker interface {
	Revoke(ctx context.Context, hash string) error
}

// Enterprise is Dify's enterprise service, for the SSO branch.
type Enterprise interface {
	SSOInitiate(ctx context.Context, signedState string) (string, error)
}

// GitHub is GitHub's OAuth flow and API, for the GitHub branch; the real one is github.Client (nil: GitHub sign-in is off).
type GitHub interface {
	// AuthorizeURL is where the browser signs in: the authorization request for redirectURI with state and the PKCE
	// challenge.
	AuthorizeURL(redirectURI, state, challenge string) string
	// Identify exchanges the code (with its PKCE verifier) for an access token, reads the user with it and forgets it.
	Identify(ctx context.Context, redirectURI, code, verifier string) (github.Identity, error)
}
