package pipeline

import (
	"context"
	"log/slog"
	"strings"

	"github.com/authgate/authgate/internal/tokens"
)

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
	c := &caller{kind: kind, hash: tokens.Hash(token), redisDown: !p.deps.RedisHealthy(), route: route, params: params,
		workspaceQuery: workspaceQuery}
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
	if c.fill {
		defer p.fillCache(ctx, c)
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

// dependencyFailed records a failure that denies the Check with 503: counted every time, logged through the throttle.
func (p *Pipeline) dependencyFailed(ctx context.Context, dependency, what string, err error) {
	p.metrics.dependencyErrors.Add(ctx, 1, dependencyAttr(dependency))
	p.logFailure(ctx, slog.LevelError, dependency+":"+what, what+" failed; denying 503", "dependency", dependency, "error", err)
}
