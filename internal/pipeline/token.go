package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

const invalidBearerWindow = time.Minute

// errRedisDown stands for a Redis call skipped because an earlier one of the same Check failed.
var errRedisDown = errors.New("redis unreachable earlier in this check")

// resolveToken is SPEC §3.2 step 7: the cache first, Postgres on a miss, with the rules that keep a dead token dead.
func (p *Pipeline) resolveToken(ctx context.Context, req *Request, c *caller) (Decision, bool) {
	var entry TokenEntry
	status, err := CacheMiss, errRedisDown
	if !c.redisDown {
		if local, ok := p.deps.Cache.Local(c.hash); ok { // a warm Check: no Redis deadline to build
			entry, status, err = local, CacheHit, nil
		} else {
			rctx, cancel := p.redisCtx(ctx)
			entry, status, err = p.deps.Cache.Get(rctx, c.hash)
			cancel()
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return denyUnavailable(), false
		}
		// Redis being down must not stop authentication: Postgres answers.
		p.metrics.cacheResult(ctx, "error")
		if !c.redisDown {
			p.deps.Logger.WarnContext(ctx, "token cache unavailable; reading Postgres", "error", err)
		}
		c.redisDown = true
		status = CacheMiss
	}
	now := p.deps.Now()
	switch status {
	case CacheInvalid:
		p.metrics.cacheResult(ctx, "invalid")
		return p.invalidBearer(ctx, req, c), false
	case CacheHit:
		p.metrics.cacheResult(ctx, "hit")
		if !entryMatchesKind(entry, c.kind) {
			p.deps.Logger.ErrorContext(ctx, "cached token entry inconsistent with its prefix", "token_id", entry.TokenID,
				"prefix", c.kind.Prefix)
			return p.invalidBearer(ctx, req, c), false
		}
		if !now.Before(entry.ExpiresAt) {
			p.hardExpire(ctx, entry.TokenID, entry.ClientID, now)
			return p.invalidBearer(ctx, req, c), false
		}
		c.entry = entry
		return Decision{}, true
	}
	if err == nil {
		p.metrics.cacheResult(ctx, "miss")
	}

	if d, ok := p.checkInvalidBudget(ctx, req, c); !ok {
		return d, false
	}
	tok, err := p.deps.Tokens.LookupByHash(ctx, c.hash)
	switch {
	case errors.Is(err, tokens.ErrNotFound):
		p.markUnknown(ctx, c)
		return p.invalidBearer(ctx, req, c), false
	case err != nil:
		p.dependencyFailed(ctx, "postgres", "token lookup", err)
		return denyUnavailable(), false
	}
	entry = TokenEntry{SubjectEmail: tok.SubjectEmail, SubjectIssuer: tok.SubjectIssuer, AccountID: tok.AccountID,
		ClientID: tok.ClientID, TokenID: tok.ID, ExpiresAt: tok.ExpiresAt.UTC()}
	if tok.Prefix != c.kind.Prefix || !entryMatchesKind(entry, c.kind) {
		p.deps.Logger.ErrorContext(ctx, "token row inconsistent with the presented prefix", "token_id", tok.ID,
			"row_prefix", tok.Prefix, "prefix", c.kind.Prefix)
		return p.invalidBearer(ctx, req, c), false
	}
	if tok.Expired(now) {
		p.hardExpire(ctx, tok.ID, tok.ClientID, now)
		return p.invalidBearer(ctx, req, c), false
	}
	if c.kind.Subject == tokens.SubjectAccount {
		acct, err := p.deps.Directory.Account(ctx, tok.AccountID)
		switch {
		case errors.Is(err, directory.ErrNotFound) || err == nil && acct.Status != directory.AccountStatusActive:
			p.markUnknown(ctx, c)
			return p.invalidBearer(ctx, req, c), false
		case err != nil:
			p.dependencyFailed(ctx, "postgres", "account lookup", err)
			return denyUnavailable(), false
		}
	}
	// SET NX: a tombstone written by a concurrent revocation wins over this fill.
	if !c.redisDown {
		rctx, cancel := p.redisCtx(ctx)
		defer cancel()
		if err := p.deps.Cache.Fill(rctx, c.hash, entry); err != nil {
			c.redisDown = true
			p.deps.Logger.DebugContext(ctx, "token cache fill failed", "error", err)
		}
	}
	c.entry = entry
	return Decision{}, true
}

// entryMatchesKind: dfoa_ tokens belong to an account; dfoe_ tokens to an external subject with an issuer.
func entryMatchesKind(e TokenEntry, k tokens.Kind) bool {
	if k.Subject == tokens.SubjectAccount {
		return e.AccountID != ""
	}
	return e.AccountID == "" && e.SubjectIssuer != ""
}

// hardExpire revokes an expired token (SPEC §1); only the replica whose compare-and-set hit emits the audit event. The
// token is refused either way, so a failure here is logged, not turned into a 503.
func (p *Pipeline) hardExpire(ctx context.Context, tokenID, clientID string, now time.Time) {
	hit, err := p.deps.Tokens.HardExpire(ctx, tokenID, now)
	if err != nil {
		p.deps.Logger.ErrorContext(ctx, "hard-expire failed", "token_id", tokenID, "error", err)
		return
	}
	if hit {
		p.metrics.hardExpired.Add(ctx, 1)
		p.deps.Logger.InfoContext(ctx, "oauth.token_expired", "audit_event", "oauth.token_expired",
			"token_id", tokenID, "client_id", clientID)
	}
}

func (p *Pipeline) markUnknown(ctx context.Context, c *caller) {
	if c.redisDown {
		return
	}
	rctx, cancel := p.redisCtx(ctx)
	defer cancel()
	if err := p.deps.Cache.MarkUnknown(rctx, c.hash); err != nil {
		c.redisDown = true
		p.deps.Logger.DebugContext(ctx, "token cache negative fill failed", "error", err)
	}
}

func (p *Pipeline) ipBudgetKey(req *Request) string {
	bucket := "unknown"
	if req.ClientIP.IsValid() {
		if p.deps.ClientBucket != nil {
			bucket = p.deps.ClientBucket(req.ClientIP)
		} else {
			bucket = req.ClientIP.String()
		}
	}
	return "rl:invalid_bearer:ip:" + bucket
}

// checkInvalidBudget refuses a lookup to a client that has spent its invalid_bearer budget (random-token floods). Without
// Redis the budget cannot be read; the lookup goes ahead, as the token itself is still checked.
func (p *Pipeline) checkInvalidBudget(ctx context.Context, req *Request, c *caller) (Decision, bool) {
	if p.opts.InvalidBearerPerIPPerMin <= 0 {
		return Decision{}, true
	}
	rd, err := RateDecision{}, errRedisDown
	if !c.redisDown {
		rctx, cancel := p.redisCtx(ctx)
		rd, err = p.deps.Limiter.Exceeded(rctx, p.ipBudgetKey(req), p.opts.InvalidBearerPerIPPerMin, invalidBearerWindow)
		cancel()
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return denyUnavailable(), false
	case err != nil:
		c.redisDown = true
		p.metrics.rateLimitSkipped.Add(ctx, 1, skippedIPBudget)
		return Decision{}, true
	case !rd.Allowed:
		return denyRateLimited(rd, "too many invalid bearer tokens from this address"), false
	}
	return Decision{}, true
}

// invalidBearer counts the outcome against the client's budget and denies.
func (p *Pipeline) invalidBearer(ctx context.Context, req *Request, c *caller) Decision {
	if p.opts.InvalidBearerPerIPPerMin > 0 && !c.redisDown {
		rctx, cancel := p.redisCtx(ctx)
		defer cancel()
		if err := p.deps.Limiter.Add(rctx, p.ipBudgetKey(req), invalidBearerWindow); err != nil {
			c.redisDown = true
			p.deps.Logger.DebugContext(ctx, "invalid-bearer budget not counted", "error", err)
		}
	}
	return denyInvalidBearer("the bearer token is not valid")
}
