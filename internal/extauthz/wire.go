package extauthz

import (
	"context"
	"time"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/tokencache"
)

// The pipeline declares the small interfaces it needs; these adapt the real packages to them.

type limiterAdapter struct{ w *ratelimit.SlidingWindow }

func (l limiterAdapter) Allow(ctx context.Context, key string, limit int, window time.Duration) (pipeline.RateDecision, error) {
	d, err := l.w.Allow(ctx, key, limit, window)
	return pipeline.RateDecision(d), err
}

func (l limiterAdapter) AllowLocal(key string, limit int, window time.Duration) (pipeline.RateDecision, bool) {
	d, ok := l.w.AllowLocal(key, limit, window)
	return pipeline.RateDecision(d), ok
}

func (l limiterAdapter) BoundsCalls() bool { return l.w.BoundsCalls() }

func (l limiterAdapter) Exceeded(ctx context.Context, key string, limit int, window time.Duration) (pipeline.RateDecision, error) {
	d, err := l.w.Exceeded(ctx, key, limit, window)
	return pipeline.RateDecision(d), err
}

func (l limiterAdapter) Add(ctx context.Context, key string, window time.Duration) error {
	return l.w.Add(ctx, key, window)
}

type cacheAdapter struct{ c *tokencache.Cache }

func (a cacheAdapter) Get(ctx context.Context, hash string) (pipeline.TokenEntry, pipeline.CacheStatus, error) {
	e, st, err := a.c.Get(ctx, hash)
	switch st {
	case tokencache.Hit:
		return pipeline.TokenEntry(e), pipeline.CacheHit, err
	case tokencache.Invalid:
		return pipeline.TokenEntry{}, pipeline.CacheInvalid, err
	}
	return pipeline.TokenEntry{}, pipeline.CacheMiss, err
}

func (a cacheAdapter) Local(hash string) (pipeline.TokenEntry, bool) {
	e, ok := a.c.Local(hash)
	return pipeline.TokenEntry(e), ok
}

func (a cacheAdapter) Fill(ctx context.Context, hash string, e pipeline.TokenEntry) error {
	return a.c.Fill(ctx, hash, tokencache.Entry(e))
}

func (a cacheAdapter) RecordVerdict(ctx context.Context, hash, tenantID string, member bool) error {
	return a.c.RecordVerdict(ctx, hash, tenantID, member)
}
