package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultMaxConns is the pool size when the URL does not set pool_max_conns. pgx's own default (the CPU count, at least
// 4) queues a burst of cold Checks behind four connections; concurrent lookups of one hash are also collapsed by the
// callers, so this bounds distinct queries in flight.
const DefaultMaxConns = 16

// ErrBadURL is the error for a URL pgx cannot parse; its text never quotes the URL (it may carry a password).
type ErrBadURL struct{}

func (ErrBadURL) Error() string { return "not a Postgres URL" }

// OpenPool builds the one kind of pool every authgate process uses, from a connection string: DATABASE_URL, or what
// config.Database.DSN builds from Dify's DB_* variables (which carries pool_max_conns when SQLALCHEMY_POOL_SIZE is set).
// Nothing connects until the first query, so Postgres being down at start-up is an outage to ride out; pgx's pool_* URL
// parameters (pool_max_conns, ...) still apply.
func OpenPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, ErrBadURL{}
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	// A dead server must not hold a request for the kernel's TCP timeout; each query is bounded by its caller's deadline.
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.HealthCheckPeriod = 15 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	return pool, nil
}
