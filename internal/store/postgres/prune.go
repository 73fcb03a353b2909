package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/authgate/authgate/internal/store/internal/rules"
	"github.com/authgate/authgate/internal/tokens"
)

// PruneLockKey is the advisory lock that lets one replica at a time run the retention prune ("authgate" in ASCII; any fixed
// key that Dify does not use would do).
const PruneLockKey int64 = 0x6175746867617465

// Prune implements tokens.Store. The advisory lock is session-level, so it is taken and released on one dedicated
// connection; a batch at a time keeps each DELETE's locks and WAL small on a large table.
func (s *TokenStore) Prune(ctx context.Context, cutoff time.Time, batchSize int) (int, error) {
	if batchSize < 1 {
		return 0, rules.ErrInvalidBatch
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: prune: %w", err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, PruneLockKey).Scan(&locked); err != nil {
		conn.Release()
		return 0, fmt.Errorf("postgres: prune lock: %w", err)
	}
	if !locked {
		conn.Release()
		return 0, tokens.ErrPruneBusy
	}
	defer func() {
		// Unlock even when ctx has ended; a connection that cannot confirm the unlock is closed, which releases the lock.
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(unlockCtx, `SELECT pg_advisory_unlock($1)`, PruneLockKey); err != nil {
			_ = conn.Hijack().Close(unlockCtx)
			return
		}
		conn.Release()
	}()

	deleted := 0
	for {
		tag, err := conn.Exec(ctx, `DELETE FROM oauth_access_tokens WHERE id IN (
			SELECT id FROM oauth_access_tokens
			WHERE revoked_at < $1 OR (revoked_at IS NULL AND expires_at < $1)
			LIMIT $2)`, cutoff, batchSize)
		if err != nil {
			return deleted, fmt.Errorf("postgres: prune: %w", err)
		}
		deleted += int(tag.RowsAffected())
		if tag.RowsAffected() < int64(batchSize) {
			break
		}
	}
	// Revocation records are read only for a cache TTL or so, and let a retried revocation succeed; past the cutoff their
	// rows are gone too.
	for {
		tag, err := conn.Exec(ctx, `DELETE FROM authgate_revoked_tokens WHERE token_hash IN (
			SELECT token_hash FROM authgate_revoked_tokens WHERE revoked_at < $1 LIMIT $2)`, cutoff, batchSize)
		if err != nil {
			return deleted, fmt.Errorf("postgres: prune revocation records: %w", err)
		}
		if tag.RowsAffected() < int64(batchSize) {
			return deleted, nil
		}
	}
}
