package config

import "time"

// Limiter modes (RATE_LIMIT_MODE): docs/architecture.md, "Rate limiting".
const (
	RateLimitExact   = "exact"
	RateLimitBatched = "batched"
	// MaxRateLimitBatchAllowance bounds RATE_LIMIT_BATCH_ALLOWANCE: the hits one replica holds for one token are written
	// in one command.
	MaxRateLimitBatchAllowance = 1000
)

// readRateLimitMode reads the per-token limiter's mode and, for the batched mode, its interval and per-replica allowance.
// The allowance defaults to one interval's worth of OPENAPI_RATE_LIMIT_PER_TOKEN (its share of the 60 s window, rounded
// up; at least 1, at most 1000).
func (c *Extauthz) readRateLimitMode(r *reader) {
	c.RateLimitMode = r.String("RATE_LIMIT_MODE", RateLimitExact)
	switch c.RateLimitMode {
	case RateLimitExact, RateLimitBatched:
	default:
		r.fail("RATE_LIMIT_MODE", "must be exact or batched: %q", c.RateLimitMode)
	}
	c.RateLimitBatchInterval = r.Duration("RATE_LIMIT_BATCH_INTERVAL", 100*time.Millisecond)
	if c.RateLimitBatchInterval > time.Minute {
		r.fail("RATE_LIMIT_BATCH_INTERVAL", "must be at most the window (1m): %q", c.RateLimitBatchInterval.String())
	}
	perInterval := (int64(c.RateLimitPerToken)*int64(c.RateLimitBatchInterval) + int64(time.Minute) - 1) / int64(time.Minute)
	def := int(min(max(perInterval, 1), MaxRateLimitBatchAllowance))
	c.RateLimitBatchAllowance = r.Int("RATE_LIMIT_BATCH_ALLOWANCE", def, 1, MaxRateLimitBatchAllowance)
}
