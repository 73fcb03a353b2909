package testenv_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
)

func TestPostgresHasMigratedSchema(t *testing.T) {
	pool := testenv.Postgres(t)
	var n int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_indexes WHERE tablename = 'oauth_access_tokens'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	// pkey, token_hash unique, four partial indexes, uq_oauth_active_per_device
	if n != 7 {
		t.Fatalf("indexes on oauth_access_tokens = %d, want 7", n)
	}
}

func TestRedisDatabasesAreIsolated(t *testing.T) {
	a, b := testenv.Redis(t), testenv.Redis(t)
	ctx := context.Background()
	if a.Options().DB == b.Options().DB {
		t.Fatalf("two leases share database %d", a.Options().DB)
	}
	if err := a.Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("a key written through one lease is visible through another")
	}
}

func TestRedisServerStopsAndStarts(t *testing.T) {
	s := testenv.StartRedisServer(t)
	c := s.Client()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded on a stopped server")
	}
	s.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

func TestRedisServerTLSRefusesPlainText(t *testing.T) {
	s := testenv.StartRedisServerTLS(t)
	ctx := context.Background()
	if !strings.HasPrefix(s.URL(), "rediss://") {
		t.Fatalf("URL %s", s.URL())
	}
	if err := s.Client().Ping(ctx).Err(); err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}
	plain := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Fatal("a plain-text client got an answer from the TLS-only server")
	}
}
