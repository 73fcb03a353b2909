package deviceflow

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Rate limits of the device flow (docs/security.md); the approve/deny limit per account is
// DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR.
type limit struct {
	prefix string
	n      int
	window time.Duration
}

var (
	limitDeviceCode = limit{"rl:deviceflow:code:ip:", 60, time.Hour}
	limitLookup     = limit{"rl:deviceflow:lookup:ip:", 60, 5 * time.Minute}
	// limitFailedLookup is the budget of "unknown code" answers per address, from every endpoint that takes a typed user
	// code. Ten minutes lets a person who mistyped a code a few times too often try again soon; docs/security.md shows the
	// window still keeps guessing a pending code out of reach.
	limitFailedLookup = limit{"rl:deviceflow:lookup_failed:ip:", 20, 10 * time.Minute}
	limitSSOInitiate  = limit{"rl:deviceflow:sso_initiate:ip:", 60, time.Hour}
	limitGitHubStart  = limit{"rl:deviceflow:github_start:ip:", 60, time.Hour}
	// limitRevokeUnknown is the budget per address of RFC 7009 revocations whose token is neither live nor recorded as
	// revoked: each costs Postgres two lookups and the endpoint takes no credential. A client revoking its own tokens (or
	// retrying a revocation, which finds the record) spends none of it.
	limitRevokeUnknown  = limit{"rl:deviceflow:revoke_unknown:ip:", 20, 10 * time.Minute}
	limitApproveExtMail = limit{"rl:deviceflow:approve_external:email:", 10, time.Hour}
	limitMe             = limit{"rl:deviceflow:me:token:", 60, time.Minute}
)

func (s *Server) limitApprove() limit {
	return limit{"rl:deviceflow:approve:account:", s.cfg.ApprovePerHour, time.Hour}
}

// allow counts one request against l for subject and refuses it with 429 rate_limited and Retry-After when the window is
// full. A Redis failure is returned as is (503): the state the request needs lives in the same Redis.
func (s *Server) allow(ctx context.Context, w http.ResponseWriter, l limit, subject string) error {
	ctx, cancel := redisCall(ctx)
	defer cancel()
	d, err := s.deps.Limiter.Allow(ctx, l.prefix+subject, l.n, l.window)
	if err != nil {
		return redisFailure("rate limit", err)
	}
	if !d.Allowed {
		return tooMany(w, d.RetryAfter)
	}
	return nil
}

// checkGuesses refuses, with 429 and Retry-After, an address that has spent its budget of unknown user codes; it counts
// nothing. Every endpoint that takes a typed user code calls it before looking the code up, and chargeGuess after an
// "unknown code" answer, so guesses spread over the endpoints share one budget.
func (s *Server) checkGuesses(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	return s.checkBudget(ctx, w, limitFailedLookup, s.clientBucket(r), "failed-lookup budget")
}

// chargeGuess counts one unknown user code against the caller's address. A failure to count is a 503: an uncounted guess
// would let a flood through.
func (s *Server) chargeGuess(ctx context.Context, r *http.Request) error {
	return s.chargeBudget(ctx, limitFailedLookup, s.clientBucket(r), "failed-lookup budget")
}

// checkBudget refuses (429, Retry-After) a subject whose window of l is full, counting nothing; chargeBudget counts one
// failure. Budgets of failures are checked before the work they protect and charged only when it found nothing.
func (s *Server) checkBudget(ctx context.Context, w http.ResponseWriter, l limit, subject, what string) error {
	ctx, cancel := redisCall(ctx)
	defer cancel()
	d, err := s.deps.Limiter.Exceeded(ctx, l.prefix+subject, l.n, l.window)
	if err != nil {
		return redisFailure(what, err)
	}
	if !d.Allowed {
		return tooMany(w, d.RetryAfter)
	}
	return nil
}

func (s *Server) chargeBudget(ctx context.Context, l limit, subject, what string) error {
	ctx, cancel := redisCall(ctx)
	defer cancel()
	if err := s.deps.Limiter.Add(ctx, l.prefix+subject, l.window); err != nil {
		return redisFailure(what, err)
	}
	return nil
}

// tooMany sets Retry-After in whole seconds, rounded up and at least 1.
func tooMany(w http.ResponseWriter, retryAfter time.Duration) error {
	secs := int(math.Ceil(retryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return errorf(http.StatusTooManyRequests, codeRateLimited, "too many requests; retry after "+strconv.Itoa(secs)+" s")
}
