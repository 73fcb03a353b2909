package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

const invalidBearerWindow = time.Minute

// errRedisDown stands for a Redis call skipped because Redis is known to be unreachable: the client's health breaker is
// open, or an earlier call of the same Check failed.
var errRedisDown = errors.New("redis unreachable")

// resolveToken is the token step (docs/architecture.md, "A Check"): memory, then the Redis cache, then Postgres, with the
// rules that keep a dead token dead. It writes nothing to Redis for a bearer it does not find valid.
func (p *Pipeline) resolveToken(ctx context.Context, req *Request, c *caller) (Decision, bool) {
	if _, refused := p.negative.Peek(c.hash); refused { // Peek, unlike Contains, honours the entry's expiry
		// Refused within the last few seconds: no Redis, no Postgres, and nothing charged, as it costs nothing.
		p.metrics.cacheResult(ctx, "negative")
		return denyInvalidBearer("the bearer token is not valid"), false
	}
	var entry TokenEntry
	status, err := CacheMiss, error(nil)
	if local, ok := p.deps.Cache.Local(c.hash); ok { // a warm Check: no Redis deadline to build
		entry, status = local, CacheHit
	} else if c.redisDown {
		err = errRedisDown
	} else {
		c.budgetAhead = p.readBudgetAhead(ctx, req, c)
		rctx, cancel := p.redisCtx(ctx)
		entry, status, err = p.deps.Cache.Get(rctx, c.hash)
		cancel()
	}
	if err != nil {
		if ctx.Err() != nil {
			return denyUnavailable(), false
		}
		// Redis being down must not stop authentication: Postgres answers.
		p.metrics.cacheResult(ctx, "error")
		if !c.redisDown {
			p.logFailure(ctx, slog.LevelWarn, "redis:token cache", "token cache unavailable; reading Postgres", "error", err)
		}
		c.redisDown = true
		status = CacheMiss
	}
	now := p.deps.Now()
	switch status {
	case CacheInvalid:
		// A tombstone: the token is dead for good, so memory may refuse it too.
		p.metrics.cacheResult(ctx, "invalid")
		p.negative.Add(c.hash, struct{}{})
		return denyInvalidBearer("the bearer token is not valid"), false
	case CacheHit:
		p.metrics.cacheResult(ctx, "hit")
		if !entryMatchesKind(entry, c.kind) {
			p.deps.Logger.ErrorContext(ctx, "cached token entry inconsistent with its prefix", "token_id", entry.TokenID,
				"prefix", c.kind.Prefix)
			p.negative.Add(c.hash, struct{}{})
			return denyInvalidBearer("the bearer token is not valid"), false
		}
		if !now.Before(entry.ExpiresAt) {
			p.hardExpire(ctx, tokens.Token{ID: entry.TokenID, ClientID: entry.ClientID, SubjectEmail: entry.SubjectEmail,
				SubjectIssuer: entry.SubjectIssuer, AccountID: entry.AccountID}, now)
			p.negative.Add(c.hash, struct{}{})
			return denyInvalidBearer("the bearer token is not valid"), false
		}
		c.entry = entry
		return Decision{}, true
	}
	if err == nil {
		p.metrics.cacheResult(ctx, "miss")
	}
	return p.lookupToken(ctx, req, c, now)
}

// lookupToken asks Postgres about a hash no cache knows, once admitted (admitLookup). Concurrent Checks of one hash share
// one admission and one query.
func (p *Pipeline) lookupToken(ctx context.Context, req *Request, c *caller, now time.Time) (Decision, bool) {
	a, d, ok := p.admitShared(ctx, req, c)
	if !ok {
		return d, false
	}
	defer a.finish()
	tenant := p.membershipTenantHint(c)
	res, err := p.lookupHash(ctx, c.hash, tenant)
	tok := res.tok
	switch {
	case errors.Is(err, tokens.ErrNotFound):
		return p.refuseLookedUp(ctx, c, a), false
	case err != nil:
		p.budget.release(a.hold)
		p.dependencyFailed(ctx, "postgres", "token lookup", err)
		return denyUnavailable(), false
	}
	entry := TokenEntry{SubjectEmail: tok.SubjectEmail, SubjectIssuer: tok.SubjectIssuer, AccountID: tok.AccountID,
		ClientID: tok.ClientID, TokenID: tok.ID, ExpiresAt: tok.ExpiresAt.UTC()}
	if tok.Prefix != c.kind.Prefix || !entryMatchesKind(entry, c.kind) {
		p.deps.Logger.ErrorContext(ctx, "token row inconsistent with the presented prefix", "token_id", tok.ID,
			"row_prefix", tok.Prefix, "prefix", c.kind.Prefix)
		return p.refuseLookedUp(ctx, c, a), false
	}
	if tok.Expired(now) {
		p.hardExpire(ctx, tok, now)
		return p.refuseLookedUp(ctx, c, a), false
	}
	if c.kind.Subject == tokens.SubjectAccount {
		acct, err := res.account, error(nil)
		switch {
		case !res.withAccount:
			acct, err = p.lookupAccount(ctx, tok.AccountID)
		case acct.ID == "":
			err = directory.ErrNotFound
		}
		switch {
		case errors.Is(err, directory.ErrNotFound) || err == nil && acct.Status != directory.AccountStatusActive:
			return p.refuseLookedUp(ctx, c, a), false
		case err != nil:
			p.budget.release(a.hold)
			p.dependencyFailed(ctx, "postgres", "account lookup", err)
			return denyUnavailable(), false
		}
	}
	p.budget.release(a.hold) // a valid token costs its address nothing
	p.budget.vouch(c.hash)
	if c.kind.Subject == tokens.SubjectAccount && res.tenant != "" && res.tenant == tenant {
		entry.VerifiedTenants = map[string]bool{tenant: res.member}
	}
	c.entry, c.fill = entry, true // cached when the Check ends (fillCache), with the verdicts it learned meanwhile
	return Decision{}, true
}

// fillCache writes the entry of a token this Check looked up, with the membership verdicts it learned, whatever the
// Check's decision (the token is valid either way). SET NX: a tombstone written by a concurrent revocation wins over this
// fill. The write is made after the Check answers: it only saves later Checks a Postgres read, so the client need not wait
// for it (the cache sends it with its next round trip of reads, so under load it costs no round trip of its own).
func (p *Pipeline) fillCache(ctx context.Context, c *caller) {
	if c.redisDown || ctx.Err() != nil {
		return
	}
	hash, entry := c.hash, c.entry // the Check is over: nothing changes them any more
	p.fills.Add(1)
	go func() {
		defer p.fills.Done()
		rctx, cancel := p.redisCtx(context.WithoutCancel(ctx))
		err := p.deps.Cache.Fill(rctx, hash, entry)
		cancel()
		if err != nil {
			p.logFailure(ctx, slog.LevelDebug, "redis:token cache fill", "token cache fill failed", "error", err)
		}
	}()
}

// WaitFills waits, up to ctx, for the cache fills of Checks that have answered; call it once no Check is running.
func (p *Pipeline) WaitFills(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		p.fills.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// admission is how a lookup went ahead: holding a slot of its address's budget, through the suspect lane, or riding on
// the admission of a concurrent lookup of the same hash (shared: it costs Postgres nothing more, so it is charged nothing).
type admission struct {
	key     string
	hold    budgetHold
	suspect bool
	shared  bool
	flight  *admissionFlight // set for the Check others share with, until its lookup is over
}

// finish ends the sharing: Checks arriving later are admitted on their own.
func (a admission) finish() {
	if a.flight != nil {
		a.flight.done()
	}
}

// admitShared admits the lookup of c.hash. The first Check to ask is admitted (or refused) on its own account; Checks of
// the same hash that arrive while it is deciding or looking up wait for that decision and, if it let the lookup go ahead,
// share the query instead of each spending a slot of the budget or a token of the suspect lane: a burst of Checks of one
// valid token is one lookup, however many addresses it comes from. A Check whose leader was refused asks on its own.
func (p *Pipeline) admitShared(ctx context.Context, req *Request, c *caller) (admission, Decision, bool) {
	f, leader := p.admissions.join(c.hash)
	if leader {
		decided := false
		defer func() {
			if !decided { // a panic: the Checks waiting must not wait for ever
				f.decide(false)
				f.done()
			}
		}()
		a, d, ok := p.admitLookup(ctx, req, c)
		f.decide(ok)
		decided = true
		if !ok {
			f.done()
			return a, d, false
		}
		a.flight = f
		return a, d, true
	}
	select {
	case <-f.decided:
	case <-ctx.Done():
		return admission{}, denyUnavailable(), false
	}
	if f.admitted {
		return admission{key: p.ipBudgetKey(req), shared: true}, Decision{}, true
	}
	return p.admitLookup(ctx, req, c)
}

// admitLookup decides whether this Check may cost a lookup: with a slot of its address's invalid-bearer budget while that
// lasts, by the count all replicas share in Redis or by this replica's own (the only one while Redis cannot answer);
// beyond it through the suspect lane, and only when that is empty is the answer 429 (retry in a second).
//
// The shared count is read only for an address this replica already counts something for in its current window (a lookup
// in flight, or one that found no live token). The first lookup from an address with a clean record here goes ahead on
// the local slot alone: that is nearly every cold Check of a valid token (a restart, a new client), which would otherwise
// pay a Redis round trip to learn that nobody is guessing from its address. It costs the budget at most one lookup per
// replica per address and window beyond the shared count (docs/security.md, "Brute force"): once that lookup finds no
// live token, the address is counted here and its next lookups read the shared count.
func (p *Pipeline) admitLookup(ctx context.Context, req *Request, c *caller) (admission, Decision, bool) {
	a := admission{key: p.ipBudgetKey(req)}
	if p.opts.InvalidBearerPerIPPerMin <= 0 || p.budget.isVouched(c.hash) {
		return a, Decision{}, true
	}
	hold, ok := p.budget.reserve(a.key)
	if ok && c.redisDown {
		p.metrics.rateLimitSkipped.Add(ctx, 1, skippedIPBudget)
	} else if ok && !hold.first {
		rd, err := p.readBudget(ctx, a.key, c)
		switch {
		case err != nil && ctx.Err() != nil:
			p.budget.release(hold)
			return a, denyUnavailable(), false
		case err != nil:
			c.redisDown = true
			p.metrics.rateLimitSkipped.Add(ctx, 1, skippedIPBudget)
			p.logFailure(ctx, slog.LevelWarn, "redis:invalid-bearer budget",
				"invalid-bearer budget unavailable in Redis; counting per replica", "error", err)
		case !rd.Allowed:
			p.budget.release(hold)
			ok = false
		}
	}
	if ok {
		a.hold = hold
		return a, Decision{}, true
	}
	a.suspect = true
	if !p.lane.take() {
		p.metrics.suspectLookups.Add(ctx, 1, suspectRefused)
		return a, denyRateLimited(RateDecision{RetryAfter: time.Second}, "too many invalid bearer tokens from this address"), false
	}
	p.metrics.suspectLookups.Add(ctx, 1, suspectAdmitted)
	return a, Decision{}, true
}

// budgetRead is the invalid-bearer budget's Redis read (Limiter.Exceeded), started beside the token cache read.
type budgetRead struct {
	key  string
	done chan struct{} // closed once rd and err are set
	rd   RateDecision
	err  error
}

// readBudgetAhead starts the budget read a lookup of c.hash would make, beside the token cache read, when the hash may well
// be looked up: the two round trips of a cold Check then overlap instead of following each other. It starts nothing when
// no read would be made: the budget is off, the hash was found valid lately, this replica counts nothing for the address
// (admitLookup), or its own count already refuses the address (then no Redis call is made at all).
func (p *Pipeline) readBudgetAhead(ctx context.Context, req *Request, c *caller) *budgetRead {
	if p.opts.InvalidBearerPerIPPerMin <= 0 || p.budget.isVouched(c.hash) {
		return nil
	}
	key := p.ipBudgetKey(req)
	if !p.budget.worthSharedRead(key) {
		return nil
	}
	r := &budgetRead{key: key, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		rctx, cancel := p.redisCtx(ctx)
		r.rd, r.err = p.deps.Limiter.Exceeded(rctx, key, p.opts.InvalidBearerPerIPPerMin, invalidBearerWindow)
		cancel()
	}()
	return r
}

// readBudget is the budget's Redis read for key: the one started ahead for this Check, or a new one.
func (p *Pipeline) readBudget(ctx context.Context, key string, c *caller) (RateDecision, error) {
	if r := c.budgetAhead; r != nil && r.key == key {
		select {
		case <-r.done:
			return r.rd, r.err
		case <-ctx.Done():
			return RateDecision{}, ctx.Err()
		}
	}
	rctx, cancel := p.redisCtx(ctx)
	defer cancel()
	return p.deps.Limiter.Exceeded(rctx, key, p.opts.InvalidBearerPerIPPerMin, invalidBearerWindow)
}

// refuseLookedUp answers a lookup that found no live token: the hash is refused from memory for a few seconds (in this
// process only: a bearer not known to be valid leaves nothing in Redis), and the address's budget is charged, since this
// outcome cost a Postgres lookup (a shared lookup was charged to the Check it rode on).
func (p *Pipeline) refuseLookedUp(ctx context.Context, c *caller, a admission) Decision {
	p.negative.Add(c.hash, struct{}{})
	p.budget.unvouch(c.hash)
	if p.opts.InvalidBearerPerIPPerMin > 0 && !a.shared {
		if a.suspect { // a slot held is already the local charge; a lookup through the lane held none
			p.budget.add(a.key)
		}
		if !c.redisDown {
			rctx, cancel := p.redisCtx(ctx)
			err := p.deps.Limiter.Add(rctx, a.key, invalidBearerWindow)
			cancel()
			if err != nil {
				c.redisDown = true
				p.logFailure(ctx, slog.LevelDebug, "redis:invalid-bearer budget", "invalid-bearer budget not counted in Redis",
					"error", err)
			}
		}
	}
	return denyInvalidBearer("the bearer token is not valid")
}

// entryMatchesKind: dfoa_ tokens belong to an account; dfoe_ tokens to an external subject with an issuer.
func entryMatchesKind(e TokenEntry, k tokens.Kind) bool {
	if k.Subject == tokens.SubjectAccount {
		return e.AccountID != ""
	}
	return e.AccountID == "" && e.SubjectIssuer != ""
}

// hardExpire takes an expired token out of service (tokens.HardExpire: only the replica whose compare-and-set hit writes
// the audit event, and counts it). The token is refused either way, so a failure here is logged, not turned into a 503.
func (p *Pipeline) hardExpire(ctx context.Context, t tokens.Token, now time.Time) {
	hit, err := tokens.HardExpire(ctx, p.deps.Tokens, p.deps.Logger, t, now)
	if err != nil {
		p.logFailure(ctx, slog.LevelError, "postgres:hard-expire", "hard-expire failed", "token_id", t.ID, "error", err)
		return
	}
	if hit {
		p.metrics.hardExpired.Add(ctx, 1)
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
