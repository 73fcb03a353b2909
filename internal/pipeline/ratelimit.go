package pipeline

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"time"
)

// rateWindow is Dify's per-token window.
const rateWindow = 60 * time.Second

// rateLimit is Dify's per-token sliding window, for a token the token step found valid. A request it admits is counted
// whatever a later step decides; one it denies is not. With Redis unreachable it follows RATE_LIMIT_FAIL_OPEN.
//
// The limiter is asked first for what it can decide from memory (a token known to be over its limit, or in batched mode
// a local admission): that costs no Redis call and no Redis deadline.
func (p *Pipeline) rateLimit(ctx context.Context, c *caller) ([]Header, Decision, bool) {
	if p.opts.RateLimitPerToken <= 0 {
		return nil, Decision{}, true
	}
	key := tokenBucketKey(c.hash)
	rd, err := RateDecision{}, errRedisDown
	if !c.redisDown {
		local := false
		if p.localLimiter != nil {
			rd, local = p.localLimiter.AllowLocal(key, p.opts.RateLimitPerToken, rateWindow)
		}
		switch {
		case local:
			err = nil
		case p.limiterBounded: // the limiter bounds its own call: no deadline to build
			rd, err = p.deps.Limiter.Allow(ctx, key, p.opts.RateLimitPerToken, rateWindow)
		default:
			rctx, cancel := p.redisCtx(ctx)
			rd, err = p.deps.Limiter.Allow(rctx, key, p.opts.RateLimitPerToken, rateWindow)
			cancel()
		}
	}
	if err == nil {
		source := rateDecidedByRedis
		if rd.Local {
			source = rateDecidedInMemory
		}
		p.metrics.rateLimitDecisions.Add(ctx, 1, source)
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
		{"ratelimit-limit", p.rateLimitValue},
		{"ratelimit-remaining", strconv.Itoa(rd.Remaining)},
		{"ratelimit-reset", strconv.Itoa(ceilSeconds(rd.Reset))},
	}, Decision{}, true
}

// tokenBucketKey is Dify's per-token bucket (the one place it is named), so Dify and authgate share one budget per token.
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
