package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/store/storetest"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

func TestTokenStoreConformance(t *testing.T) {
	storetest.RunTokenStore(t, func(t *testing.T) tokens.Store { return postgres.NewTokenStore(testenv.Postgres(t)) })
}

func TestDirectoryConformance(t *testing.T) {
	storetest.RunDirectory(t, func(t *testing.T, f dirfixture.Fixture) directory.Directory {
		pool := testenv.Postgres(t)
		testenv.SeedDirectory(t, pool, f)
		return postgres.NewDirectory(pool)
	})
}

func TestLookupWithAccountConformance(t *testing.T) {
	storetest.RunLookupWithAccount(t, func(t *testing.T, f dirfixture.Fixture) storetest.TokenAccountStore {
		pool := testenv.Postgres(t)
		testenv.SeedDirectory(t, pool, f)
		return postgres.NewTokenStore(pool)
	})
}

func TestPruneBusyWhileAnotherSessionHoldsTheLock(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := context.Background()
	other, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock($1)`, postgres.PruneLockKey); err != nil {
		t.Fatal(err)
	}
	s := postgres.NewTokenStore(pool)
	if _, err := s.Prune(ctx, time.Now(), 10); !errors.Is(err, tokens.ErrPruneBusy) {
		t.Fatalf("Prune while another session holds the lock: err = %v, want ErrPruneBusy", err)
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, postgres.PruneLockKey); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prune(ctx, time.Now(), 10); err != nil {
		t.Fatalf("Prune after the lock was released: %v", err)
	}
	// The prune released its lock: another session can take it at once.
	var got bool
	if err := other.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, postgres.PruneLockKey).Scan(&got); err != nil || !got {
		t.Fatalf("lock after a prune: %v, %v; want it free", got, err)
	}
	_, _ = other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, postgres.PruneLockKey)
}
