package deviceflow

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

func mintExpiredLongAgo(t *testing.T, store tokens.Store, label string) {
	t.Helper()
	plain, _ := tokens.Generate(tokens.Account)
	now := time.Now()
	if _, err := store.Mint(t.Context(), tokens.MintRequest{Subject: tokens.AccountSubject(flowAnn.ID, flowAnn.Email),
		ClientID: "difyctl", DeviceLabel: label, Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(plain),
		Now: now.Add(-100 * 24 * time.Hour), ExpiresAt: now.Add(-90 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func countTokens(t *testing.T, e *flowEnv) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM oauth_access_tokens`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPruneWhileAnotherReplicaPrunesIsNotAnError(t *testing.T) {
	e := newFlowEnv(t, nil)
	mintExpiredLongAgo(t, e.store, "old")
	other := testenv.Pool(t, e.pool.Config().ConnString())
	conn, err := other.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, postgres.PruneLockKey); err != nil {
		t.Fatal(err)
	}
	p := NewPruner(e.store, 30, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil)
	if n, err := p.RunOnce(t.Context()); err != nil || n != 0 {
		t.Fatalf("busy prune: %d, %v", n, err)
	}
	if countTokens(t, e) != 1 {
		t.Fatal("a busy prune deleted rows")
	}
	if _, err := conn.Exec(t.Context(), `SELECT pg_advisory_unlock($1)`, postgres.PruneLockKey); err != nil {
		t.Fatal(err)
	}
	if n, err := p.RunOnce(t.Context()); err != nil || n != 1 {
		t.Fatalf("prune after the lock was released: %d, %v", n, err)
	}
}

func TestPeriodicPruner(t *testing.T) {
	e := newFlowEnv(t, nil)
	p := NewPruner(e.store, 30, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx, 20*time.Millisecond); close(done) }()
	// Rows that expire long ago after the pruner started are removed by a later tick.
	mintExpiredLongAgo(t, e.store, "a")
	mintExpiredLongAgo(t, e.store, "b")
	deadline := time.Now().Add(5 * time.Second)
	for countTokens(t, e) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the periodic pruner did not remove expired rows within 5 s")
		}
		time.Sleep(10 * time.Millisecond) // polling for the outcome, bounded by the deadline
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the pruner did not stop")
	}
}
