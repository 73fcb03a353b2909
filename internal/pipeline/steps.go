package pipeline

import (
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

// rateWindow is Dify's per-token window.
const rateWindow = 60 * time.Second

// decide runs SPEC §3.2 steps 1–14; the first failure decides.
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
		return Decision{Allow: true, Route: route.Name}
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
	token, outcome := parseBearer(req.Headers["authorization"])
	switch outcome {
	case bearerMissing:
		return deny(401, CodeBearerRequired, "an Authorization: Bearer token is required",
			Header{"www-authenticate", challengeBearer})
	case bearerSeveral:
		return deny(400, CodeInvalidRequest, "send exactly one bearer token")
	case bearerTooLarge:
		return denyInvalidBearer("the bearer token is not valid")
	}
	kind, err := tokens.Parse(token)
	if err != nil {
		return denyInvalidBearer("the bearer token is not valid")
	}
	c := &caller{kind: kind, hash: tokens.Hash(token)}

	// 6. Rate limit, before any lookup.
	var rateHeaders []Header
	if p.opts.RateLimitPerToken > 0 {
		rctx, cancel := p.redisCtx(ctx)
		rd, err := p.deps.Limiter.Allow(rctx, tokenBucketKey(c.hash), p.opts.RateLimitPerToken, rateWindow)
		cancel()
		switch {
		case err != nil && (ctx.Err() != nil || !p.opts.RateLimitFailOpen):
			p.dependencyFailed(ctx, "redis", "rate limiter", err)
			return denyUnavailable()
		case err != nil:
			c.redisDown = true
			p.metrics.rateLimitSkipped.Add(ctx, 1, skippedToken)
			p.deps.Logger.WarnContext(ctx, "rate limiter unavailable; skipped (RATE_LIMIT_FAIL_OPEN)", "error", err)
		case !rd.Allowed:
			return denyRateLimited(rd, "too many requests with this token")
		default:
			rateHeaders = []Header{
				{"ratelimit-limit", strconv.Itoa(rd.Limit)},
				{"ratelimit-remaining", strconv.Itoa(rd.Remaining)},
				{"ratelimit-reset", strconv.Itoa(ceilSeconds(rd.Reset))},
			}
		}
	}

	// 7. Token.
	if d, ok := p.resolveToken(ctx, req, c); !ok {
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
	d := Decision{Allow: true, SetHeaders: headers, ResponseHeaders: rateHeaders, Metadata: identityMetadata(headers)}
	if !p.opts.ForwardAuthorization {
		d.RemoveHeaders = append(d.RemoveHeaders, "authorization")
	}
	return d
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

func (p *Pipeline) dependencyFailed(ctx context.Context, dependency, what string, err error) {
	p.metrics.dependencyErrors.Add(ctx, 1, dependencyAttr(dependency))
	p.deps.Logger.ErrorContext(ctx, what+" failed; denying 503", "dependency", dependency, "error", err)
}
