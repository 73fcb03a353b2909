package pipeline

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

// rateWindow is Dify's per-token window.
const rateWindow = 60 * time.Second

// decide runs the steps in order (docs/architecture.md, "A Check"); the first failure decides.
func (p *Pipeline) decide(ctx context.Context, req *Request) Decision {
	// 1. Path.
	rawPath, rawQuery := splitTarget(req.Path)
	segs, err := canonicalSegments(rawPath)
	if err != nil {
		return deny(400, CodeInvalidPath, "the request path is not canonical")
	}

	// 2. Route.
	method := req.Method
	preflight := method == "OPTIONS" && req.Headers["origin"] != "" && req.Headers["access-control-request-method"] != ""
	if preflight {
		method = strings.ToUpper(strings.TrimSpace(req.Headers["access-control-request-method"]))
	}
	route, params, ok := p.policy.Match(method, segs)
	if !ok || (route.EnterpriseOnly && !p.opts.EnterpriseEnabled) {
		return deny(404, CodeRouteNotFound, "no such route")
	}
	if preflight || route.AuthNone {
		d := Decision{Allow: true, Route: route.Name}
		if !p.opts.ForwardAuthorization {
			// Nothing checked the header here either: an upstream told it never sees one must not get a client's.
			d.RemoveHeaders = []string{"authorization"}
		}
		return d
	}
	d := p.authenticate(ctx, req, route, params, rawQuery)
	d.Route = route.Name
	return d
}

func (p *Pipeline) authenticate(ctx context.Context, req *Request, route *Route, params map[string]string, rawQuery string) Decision {
	// 3. Feature flag.
	if !p.opts.EnableOAuthBearer {
		return deny(503, CodeBearerAuthDisabled, "bearer authentication is disabled")
	}

	// 4. Query.
	workspaceQuery, ok := checkQuery(route, rawQuery)
	if !ok {
		return deny(400, CodeInvalidQuery, "a query parameter is not allowed, repeated or encoded")
	}

	// 5. Bearer.
	token, outcome := tokens.ParseAuthorization(req.Headers["authorization"])
	switch outcome {
	case tokens.BearerMissing:
		return deny(401, CodeBearerRequired, "an Authorization: Bearer token is required",
			Header{"www-authenticate", challengeBearer})
	case tokens.BearerSeveral:
		return deny(400, CodeInvalidRequest, "send exactly one bearer token")
	case tokens.BearerTooLarge:
		return denyInvalidBearer("the bearer token is not valid")
	}
	kind, err := tokens.Parse(token)
	if err != nil {
		return denyInvalidBearer("the bearer token is not valid")
	}
	// A Check asks the breaker once: while Redis is known to be down, no step waits on it.
	c := &caller{kind: kind, hash: tokens.Hash(token), redisDown: !p.deps.RedisHealthy()}
	if c.redisDown && p.opts.RateLimitPerToken > 0 && !p.opts.RateLimitFailOpen {
		// The limiter would refuse a valid token anyway (RATE_LIMIT_FAIL_OPEN=false): answer now, without a lookup.
		p.dependencyFailed(ctx, "redis", "rate limiter", errRedisDown)
		return denyUnavailable()
	}

	// 6. Token. Before the limiter, unlike Dify: per-token state in Redis is written only for tokens known to be valid
	// (docs/architecture.md, "Where authgate departs").
	if d, ok := p.resolveToken(ctx, req, c); !ok {
		return d
	}

	// 7. Rate limit.
	rateHeaders, d, ok := p.rateLimit(ctx, c)
	if !ok {
		return d
	}

	// 8. Surface.
	if !route.allows(kind.Subject) {
		return deny(403, CodeWrongSurface, "this route is not available to this kind of token")
	}
	// 9. Scope.
	if route.Scope != "" && !kind.Has(route.Scope) {
		return deny(403, CodeInsufficientScope, "the token lacks the scope "+string(route.Scope),
			Header{"www-authenticate", challengeInsufficientScope(string(route.Scope))})
	}
	// 10. License.
	if route.LicenseRequired {
		if d, ok := p.checkLicense(ctx); !ok {
			return d
		}
	}
	// 11. App.
	if route.has(StepApp) {
		if d, ok := p.checkApp(ctx, c, params["app_id"]); !ok {
			return d
		}
	}
	// 12. Membership.
	if route.has(StepMembership) && kind.Subject == tokens.SubjectAccount && !p.opts.MembershipEnforcedUpstream {
		if d, ok := p.checkMembership(ctx, c, params, workspaceQuery); !ok {
			return d
		}
	}
	// 13. App access.
	if route.has(StepAppAccess) {
		if d, ok := p.checkAppAccess(ctx, c); !ok {
			return d
		}
	}

	// 14. Caller mount.
	headers := c.identityHeaders()
	d = Decision{Allow: true, SetHeaders: headers, ResponseHeaders: rateHeaders, Metadata: identityMetadata(headers)}
	if !p.opts.ForwardAuthorization {
		d.RemoveHeaders = append(d.RemoveHeaders, "authorization")
	}
	return d
}

// rateLimit is Dify's per-token sliding window, for a token the token step found valid. A request it admits is counted
// whatever a later step decides; one it denies is not. With Redis unreachable it follows RATE_LIMIT_FAIL_OPEN.
func (p *Pipeline) rateLimit(ctx context.Context, c *caller) ([]Header, Decision, bool) {
	if p.opts.RateLimitPerToken <= 0 {
		return nil, Decision{}, true
	}
	rd, err := RateDecision{}, errRedisDown
	if !c.redisDown {
		rctx, cancel := p.redisCtx(ctx)
		rd, err = p.deps.Limiter.Allow(rctx, tokenBucketKey(c.hash), p.opts.RateLimitPerToken, rateWindow)
		cancel()
	}
	switch {
	case err != nil && (ctx.Err() != nil || !p.opts.RateLimitFailOpen):
		p.dependencyFailed(ctx, "redis", "rate limiter", err)
		return nil, denyUnavailable(), false
	case err != nil:
		p.metrics.rateLimitSkipped.Add(ctx, 1, skippedToken)
		if !c.redisDown {
			p.logFailure(ctx, slog.LevelWarn, "redis:rate limiter", "rate limiter unavailable; skipped (RATE_LIMIT_FAIL_OPEN)",
				"error", err)
		}
		c.redisDown = true
		return nil, Decision{}, true
	case !rd.Allowed:
		return nil, denyRateLimited(rd, "too many requests with this token"), false
	}
	return []Header{
		{"ratelimit-limit", strconv.Itoa(rd.Limit)},
		{"ratelimit-remaining", strconv.Itoa(rd.Remaining)},
		{"ratelimit-reset", strconv.Itoa(ceilSeconds(rd.Reset))},
	}, Decision{}, true
}

// tokenBucketKey is Dify's per-token rate-limit bucket, so Dify and authgate share one budget.
func tokenBucketKey(hash string) string { return "rl:token_id:token:" + hash }

func denyRateLimited(rd RateDecision, message string) Decision {
	retry := max(rd.RetryAfter, time.Second)
	d := deny(429, CodeRateLimited, message, Header{"retry-after", strconv.Itoa(ceilSeconds(retry))})
	d.RetryAfter = retry
	return d
}

func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// dependencyFailed records a failure that denies the Check with 503: counted every time, logged through the throttle.
func (p *Pipeline) dependencyFailed(ctx context.Context, dependency, what string, err error) {
	p.metrics.dependencyErrors.Add(ctx, 1, dependencyAttr(dependency))
	p.logFailure(ctx, slog.LevelError, dependency+":"+what, what+" failed; denying 503", "dependency", dependency, "error", err)
}
