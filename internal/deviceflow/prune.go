package deviceflow

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

// pruneBatch keeps each DELETE small on a large table.
const pruneBatch = 1000

// Pruner deletes tokens past the retention window (docs/reference/database.md): revoked before the cutoff, or never revoked and expired before
// it. Replicas share the work through the store's advisory lock.
type Pruner struct {
	store     tokens.Store
	retention time.Duration
	log       *slog.Logger
	now       func() time.Time
}

// NewPruner returns a pruner keeping retentionDays (OAUTH_ACCESS_TOKEN_RETENTION_DAYS) of history; now nil means time.Now.
func NewPruner(store tokens.Store, retentionDays int, log *slog.Logger, now func() time.Time) *Pruner {
	if now == nil {
		now = time.Now
	}
	return &Pruner{store: store, retention: time.Duration(retentionDays) * 24 * time.Hour, log: log, now: now}
}

// RunOnce prunes once. Another replica pruning at the same time is not an error: this run does nothing.
func (p *Pruner) RunOnce(ctx context.Context) (int, error) {
	cutoff := p.now().Add(-p.retention)
	n, err := p.store.Prune(ctx, cutoff, pruneBatch)
	if errors.Is(err, tokens.ErrPruneBusy) {
		p.log.InfoContext(ctx, "retention prune skipped: another replica is pruning")
		return 0, nil
	}
	if err != nil {
		return n, err
	}
	p.log.InfoContext(ctx, "retention prune done", "deleted", n, "cutoff", cutoff.UTC())
	return n, nil
}

// Run prunes now and then every interval until ctx ends. A failed run is logged and retried at the next tick.
func (p *Pruner) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := p.RunOnce(ctx); err != nil && ctx.Err() == nil {
			p.log.ErrorContext(ctx, "retention prune failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
