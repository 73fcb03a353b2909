package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// TestRecordLastUsedSkipsLockedRows: a flush never waits on a row another transaction holds (here a revocation that has not
// committed yet); it writes the other rows, and the held row, once revoked, is never written.
func TestRecordLastUsedSkipsLockedRows(t *testing.T) {
	pool := testenv.Postgres(t)
	st := postgres.NewTokenStore(pool)
	ctx := context.Background()
	now := time.Now()
	subject := tokens.AccountSubject("0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01", "alice@example.com")
	mintOne := func(label string) tokens.Token {
		m, err := st.Mint(ctx, tokens.MintRequest{Subject: subject, ClientID: "difyctl", DeviceLabel: label, Prefix: "dfoa_",
			TokenHash: tokens.Hash(label + now.String()), Now: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return m.Token
	}
	held, free := mintOne("held"), mintOne("free")

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `UPDATE oauth_access_tokens SET revoked_at = $2, token_hash = NULL WHERE id = $1`,
		held.ID, now); err != nil {
		t.Fatal(err)
	}

	// Generous against a loaded machine; a flush that waited for the lock would wait for ever (the transaction stays open).
	flushCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := st.RecordLastUsed(flushCtx, []tokens.Use{{TokenID: held.ID, At: now}, {TokenID: free.ID, At: now}})
	if err != nil || n != 1 {
		t.Fatalf("RecordLastUsed with one row held = %d, %v; want the other row written", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := st.RecordLastUsed(ctx, []tokens.Use{{TokenID: held.ID, At: now.Add(time.Second)}}); err != nil || n != 0 {
		t.Fatalf("RecordLastUsed on the revoked row = %d, %v; want nothing written", n, err)
	}
	var heldUsed, freeUsed *time.Time
	if err := pool.QueryRow(ctx, `SELECT (SELECT last_used_at FROM oauth_access_tokens WHERE id = $1),
		(SELECT last_used_at FROM oauth_access_tokens WHERE id = $2)`, held.ID, free.ID).Scan(&heldUsed, &freeUsed); err != nil {
		t.Fatal(err)
	}
	if heldUsed != nil || freeUsed == nil || !freeUsed.Equal(now.Truncate(time.Microsecond)) {
		t.Fatalf("last_used_at: revoked row %v (want NULL), other row %v (want %v)", heldUsed, freeUsed, now)
	}
}
