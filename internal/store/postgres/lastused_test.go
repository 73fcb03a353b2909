package postgres_test

import (
	"context"
	"encoding/json"
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

// TestRecordLastUsedReadsOnlyItsRows: a flush of ten uses reads ten rows, however many the table holds and whether or not
// its statistics are current (here: 5,000 rows loaded and never analysed, which once planned the flush as a scan of every
// live row).
func TestRecordLastUsedReadsOnlyItsRows(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO oauth_access_tokens (id, subject_email, subject_issuer, account_id, client_id,
		device_label, prefix, token_hash, created_at, expires_at)
		SELECT gen_random_uuid(), 'u' || g || '@example.com', 'dify:account', gen_random_uuid(), 'difyctl', 'device-' || g,
			'dfoa_', md5(g::text) || md5((g + 1)::text), now() - interval '1 hour', now() + interval '1 day'
		FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	var batch []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(id::text) FROM (SELECT id FROM oauth_access_tokens LIMIT 10) s`).
		Scan(&batch); err != nil {
		t.Fatal(err)
	}
	times := make([]time.Time, len(batch))
	for i := range times {
		times[i] = time.Now()
	}
	tx, err := pool.Begin(ctx) // EXPLAIN ANALYZE runs the update: roll it back
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var raw []byte
	if err := tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+postgres.RecordLastUsedSQL, batch, times).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	type node struct {
		NodeType   string  `json:"Node Type"`
		Relation   string  `json:"Relation Name"`
		ActualRows float64 `json:"Actual Rows"`
		Loops      float64 `json:"Actual Loops"`
		Plans      []node  `json:"Plans"`
	}
	var plans []struct {
		Plan node `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("plan %s: %v", raw, err)
	}
	var walk func(n node)
	scans := 0
	walk = func(n node) {
		if n.Relation == "oauth_access_tokens" && n.NodeType != "ModifyTable" {
			scans++
			if read := n.ActualRows * n.Loops; read > float64(len(batch)) {
				t.Errorf("%s on oauth_access_tokens read %v rows for a batch of %d\n%s", n.NodeType, read, len(batch), raw)
			}
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	if scans == 0 {
		t.Fatalf("no scan of oauth_access_tokens in the plan:\n%s", raw)
	}
}
