package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
)

// wantIndexes are the indexes of oauth_access_tokens after migration, by name (Dify's names), with a fragment of each
// definition that pins what matters.
var wantIndexes = map[string]string{
	"oauth_access_tokens_pkey":           "UNIQUE INDEX oauth_access_tokens_pkey ON public.oauth_access_tokens USING btree (id)",
	"oauth_access_tokens_token_hash_key": "UNIQUE INDEX oauth_access_tokens_token_hash_key ON public.oauth_access_tokens USING btree (token_hash)",
	"idx_oauth_subject_email":            "USING btree (subject_email) WHERE (revoked_at IS NULL)",
	"idx_oauth_account":                  "USING btree (account_id) WHERE ((revoked_at IS NULL) AND (account_id IS NOT NULL))",
	"idx_oauth_client":                   "USING btree (subject_email, client_id) WHERE (revoked_at IS NULL)",
	"idx_oauth_token_hash":               "USING btree (token_hash) WHERE (revoked_at IS NULL)",
	"uq_oauth_active_per_device": "CREATE UNIQUE INDEX uq_oauth_active_per_device ON public.oauth_access_tokens USING btree " +
		"(subject_email, subject_issuer, client_id, device_label) WHERE (revoked_at IS NULL)",
}

func emptyDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	return testenv.Pool(t, testenv.EmptyPostgresURL(t))
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func migrate(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if err := postgres.Migrate(context.Background(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
}

func indexes(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'oauth_access_tokens'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatal(err)
		}
		got[name] = def
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func checkIndexes(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	got := indexes(t, pool)
	if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(wantIndexes))) {
		t.Fatalf("indexes = %v\nwant %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(wantIndexes)))
	}
	for name, fragment := range wantIndexes {
		if !strings.Contains(got[name], fragment) {
			t.Errorf("index %s = %q, want it to contain %q", name, got[name], fragment)
		}
	}
}

// versions returns the applied versions in authgate's own table, or nil when the table does not exist.
func versions(t *testing.T, pool *pgxpool.Pool) []int64 {
	t.Helper()
	ctx := context.Background()
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, postgres.VersionTable).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return nil
	}
	rows, err := pool.Query(ctx, `SELECT version_id FROM `+postgres.VersionTable+` WHERE is_applied ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := []int64{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func tableExists(t *testing.T, pool *pgxpool.Pool) bool {
	t.Helper()
	var exists bool
	if err := pool.QueryRow(context.Background(), `SELECT to_regclass('oauth_access_tokens') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestMigrateFreshDatabaseUpDownUp(t *testing.T) {
	pool := emptyDB(t)
	migrate(t, pool)
	checkIndexes(t, pool)
	if got := versions(t, pool); !slices.Contains(got, 1) {
		t.Fatalf("versions recorded in %s = %v, want 1 among them", postgres.VersionTable, got)
	}
	if err := postgres.MigrateDownForTests(context.Background(), pool); err != nil {
		t.Fatalf("MigrateDownForTests: %v", err)
	}
	if tableExists(t, pool) {
		t.Fatal("oauth_access_tokens still exists after down")
	}
	migrate(t, pool)
	checkIndexes(t, pool)
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	pool := emptyDB(t)
	migrate(t, pool)
	exec(t, pool, `INSERT INTO oauth_access_tokens (subject_email, subject_issuer, client_id, device_label, prefix, token_hash,
		expires_at) VALUES ('a@example.com', 'https://idp', 'difyctl', 'laptop', 'dfoe_', repeat('a', 64), now() + interval '1 day')`)
	before := versions(t, pool)
	migrate(t, pool)
	if after := versions(t, pool); !slices.Equal(before, after) {
		t.Fatalf("versions after a second run = %v, want unchanged %v", after, before)
	}
	checkIndexes(t, pool)
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM oauth_access_tokens`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after a second run = %d, %v; want 1", n, err)
	}
}

func TestMigrateConcurrentRunsSerialize(t *testing.T) {
	pool := emptyDB(t)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = postgres.Migrate(context.Background(), pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	checkIndexes(t, pool)
	if got := versions(t, pool); len(got) != len(slices.Compact(slices.Clone(got))) {
		t.Fatalf("a version was recorded twice: %v", got)
	}
}

// difyTable is oauth_access_tokens as Dify's own migration (d4a5e1f3c9b7) creates it on Postgres, with its foreign key to
// accounts, so the directory fixture is created first.
const difyTable = `
CREATE TABLE oauth_access_tokens (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    subject_email varchar(255) NOT NULL,
    subject_issuer varchar(255),
    account_id uuid,
    client_id varchar(64) NOT NULL,
    device_label varchar(255) NOT NULL,
    prefix varchar(8) NOT NULL,
    token_hash varchar(64),
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_used_at timestamptz,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT oauth_access_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT oauth_access_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT fk_oauth_access_tokens_account_id FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE SET NULL
);
CREATE INDEX idx_oauth_subject_email ON oauth_access_tokens (subject_email) WHERE revoked_at IS NULL;
CREATE INDEX idx_oauth_account ON oauth_access_tokens (account_id) WHERE revoked_at IS NULL AND account_id IS NOT NULL;
CREATE INDEX idx_oauth_client ON oauth_access_tokens (subject_email, client_id) WHERE revoked_at IS NULL;
CREATE INDEX idx_oauth_token_hash ON oauth_access_tokens (token_hash) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX uq_oauth_active_per_device ON oauth_access_tokens (subject_email, subject_issuer, client_id, device_label)
    WHERE revoked_at IS NULL;
`

const difyRow = `INSERT INTO oauth_access_tokens (id, subject_email, subject_issuer, client_id, device_label, prefix, token_hash,
	expires_at) VALUES ('d0000000-0000-4000-8000-000000000001', 'dify@example.com', 'https://idp', 'difyctl', 'laptop', 'dfoe_',
	repeat('b', 64), now() + interval '1 day')`

func TestMigrateAdoptsDifysTable(t *testing.T) {
	pool := emptyDB(t)
	exec(t, pool, dirfixture.Schema)
	exec(t, pool, difyTable)
	exec(t, pool, difyRow)
	exec(t, pool, `DROP INDEX idx_oauth_client`) // a missing index is created, not a reason to stop

	migrate(t, pool)
	checkIndexes(t, pool) // Dify's indexes kept, none duplicated, the missing one added
	if got := versions(t, pool); !slices.Contains(got, 1) {
		t.Fatalf("versions recorded in %s = %v, want 1 among them", postgres.VersionTable, got)
	}
	var id string
	if err := pool.QueryRow(context.Background(), `SELECT id::text FROM oauth_access_tokens WHERE token_hash = repeat('b', 64)`).
		Scan(&id); err != nil || id != "d0000000-0000-4000-8000-000000000001" {
		t.Fatalf("Dify's row after adoption: %q, %v", id, err)
	}
	var fk int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_constraint
		WHERE conname = 'fk_oauth_access_tokens_account_id'`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("Dify's foreign key after adoption: %d, %v; want it kept", fk, err)
	}
	migrate(t, pool) // and adopting is itself idempotent
	checkIndexes(t, pool)
}

func TestMigrateRefusesIncompatibleTable(t *testing.T) {
	cases := []struct {
		name   string
		change string
		names  string // what the error must name
	}{
		{"short token_hash", `UPDATE oauth_access_tokens SET token_hash = left(token_hash, 32);
			ALTER TABLE oauth_access_tokens ALTER COLUMN token_hash TYPE varchar(32)`,
			"column token_hash: have character varying(32) NULL, want character varying(64) NULL"},
		{"missing column", `ALTER TABLE oauth_access_tokens DROP COLUMN device_label CASCADE`, "column device_label: missing"},
		{"text id", `ALTER TABLE oauth_access_tokens ALTER COLUMN id DROP DEFAULT, ALTER COLUMN id TYPE text`, "column id: have text"},
		{"nullable email", `ALTER TABLE oauth_access_tokens ALTER COLUMN subject_email DROP NOT NULL`, "column subject_email"},
		{"per-device index not partial", `DROP INDEX uq_oauth_active_per_device;
			CREATE UNIQUE INDEX uq_oauth_active_per_device ON oauth_access_tokens (subject_email, subject_issuer, client_id, device_label)`,
			"index uq_oauth_active_per_device"},
		{"token_hash not unique", `ALTER TABLE oauth_access_tokens DROP CONSTRAINT oauth_access_tokens_token_hash_key`,
			"token_hash: no UNIQUE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool := emptyDB(t)
			exec(t, pool, dirfixture.Schema)
			exec(t, pool, difyTable)
			exec(t, pool, difyRow)
			exec(t, pool, c.change)
			before := indexes(t, pool)

			err := postgres.Migrate(context.Background(), pool)
			if !errors.Is(err, postgres.ErrIncompatibleSchema) {
				t.Fatalf("Migrate: err = %v, want ErrIncompatibleSchema", err)
			}
			if !strings.Contains(err.Error(), c.names) {
				t.Fatalf("error %q does not name %q", err, c.names)
			}
			if versions(t, pool) != nil {
				t.Fatalf("%s was created by a refused migration", postgres.VersionTable)
			}
			if after := indexes(t, pool); !maps.Equal(before, after) {
				t.Fatalf("indexes changed by a refused migration:\nbefore %v\nafter  %v", before, after)
			}
			var n int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM oauth_access_tokens`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("rows after a refused migration = %d, %v; want Dify's 1", n, err)
			}
		})
	}
}

// roleWithoutPrivileges creates a login role with no privileges on anything in dbURL's database and returns a pool connected
// as it; the role is dropped at cleanup.
func roleWithoutPrivileges(t *testing.T, admin *pgxpool.Pool, dbURL string) *pgxpool.Pool {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	role := "authgate_test_migrator_" + hex.EncodeToString(b[:])
	exec(t, admin, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() {
		ctx := context.Background()
		// Runs after the role's pool is closed and before the test database is dropped (cleanups run last-registered first);
		// a role is cluster-wide, so it must not outlive the test.
		if _, err := admin.Exec(ctx, "DROP OWNED BY "+role+"; DROP ROLE "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return testenv.Pool(t, u.String())
}

// TestMigrateChecksATableTheRoleCannotRead: a migration role that neither owns Dify's table nor has any privilege on it still
// gets the readable compatibility diff, not a silently skipped check followed by an unrelated failure.
func TestMigrateChecksATableTheRoleCannotRead(t *testing.T) {
	dbURL := testenv.EmptyPostgresURL(t)
	admin := testenv.Pool(t, dbURL)
	exec(t, admin, dirfixture.Schema)
	exec(t, admin, difyTable)
	exec(t, admin, `ALTER TABLE oauth_access_tokens DROP COLUMN device_label CASCADE`)
	exec(t, admin, `REVOKE ALL ON oauth_access_tokens FROM PUBLIC`)
	migrator := roleWithoutPrivileges(t, admin, dbURL)

	err := postgres.Migrate(context.Background(), migrator)
	if !errors.Is(err, postgres.ErrIncompatibleSchema) || !strings.Contains(err.Error(), "column device_label: missing") {
		t.Fatalf("Migrate as a role without privileges: err = %v, want ErrIncompatibleSchema naming device_label", err)
	}
	if strings.Contains(err.Error(), "column id:") || strings.Contains(err.Error(), "column subject_email:") {
		t.Fatalf("columns the role cannot read were reported missing: %v", err)
	}
}

// revocationTable describes authgate_revoked_tokens as the migrations leave it: its columns and its indexes.
func revocationTable(t *testing.T, pool *pgxpool.Pool) (columns, indexDefs []string) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END
		FROM pg_attribute WHERE attrelid = to_regclass('authgate_revoked_tokens') AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		columns = append(columns, c)
	}
	rows.Close()
	rows, err = pool.Query(ctx, `SELECT indexdef FROM pg_indexes WHERE tablename = 'authgate_revoked_tokens' ORDER BY indexname`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			t.Fatal(err)
		}
		indexDefs = append(indexDefs, d)
	}
	rows.Close()
	return columns, indexDefs
}

// difyObjects lists the constraints and triggers on oauth_access_tokens: adopting Dify's table must not add any (a foreign
// key from authgate's table would add triggers to Dify's).
func difyObjects(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT 'constraint ' || conname FROM pg_constraint WHERE conrelid = to_regclass('oauth_access_tokens')
		UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = to_regclass('oauth_access_tokens')
		UNION ALL SELECT 'referenced by ' || conname FROM pg_constraint WHERE confrelid = to_regclass('oauth_access_tokens')
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestMigrateRevocationRecords: the second migration creates authgate's own revocation table with its revoked_at index, on a
// fresh database and next to an adopted Dify table, without touching Dify's table; down removes it.
func TestMigrateRevocationRecords(t *testing.T) {
	wantColumns := []string{"token_hash character varying(64) not null", "token_id uuid not null",
		"revoked_at timestamp with time zone not null", "reason character varying(16) not null"}
	check := func(t *testing.T, pool *pgxpool.Pool) {
		t.Helper()
		cols, idx := revocationTable(t, pool)
		if !slices.Equal(cols, wantColumns) {
			t.Fatalf("authgate_revoked_tokens columns = %q\nwant %q", cols, wantColumns)
		}
		want := []string{
			"CREATE UNIQUE INDEX authgate_revoked_tokens_pkey ON public.authgate_revoked_tokens USING btree (token_hash)",
			"CREATE INDEX idx_authgate_revoked_tokens_revoked_at ON public.authgate_revoked_tokens USING btree (revoked_at)",
		}
		if !slices.Equal(idx, want) {
			t.Fatalf("authgate_revoked_tokens indexes = %q", idx)
		}
		if got := versions(t, pool); !slices.Contains(got, 2) {
			t.Fatalf("versions = %v, want 2 among them", got)
		}
	}
	t.Run("fresh", func(t *testing.T) {
		pool := emptyDB(t)
		migrate(t, pool)
		check(t, pool)
		if _, err := pool.Exec(context.Background(), `INSERT INTO authgate_revoked_tokens VALUES
			(repeat('c', 64), gen_random_uuid(), now(), 'forgotten')`); err == nil {
			t.Fatal("a record with an unknown reason was accepted")
		}
		if err := postgres.MigrateDownForTests(context.Background(), pool); err != nil {
			t.Fatal(err)
		}
		if cols, _ := revocationTable(t, pool); len(cols) != 0 {
			t.Fatalf("authgate_revoked_tokens survived down: %q", cols)
		}
	})
	t.Run("adopting Dify's table", func(t *testing.T) {
		pool := emptyDB(t)
		exec(t, pool, dirfixture.Schema)
		exec(t, pool, difyTable)
		before := difyObjects(t, pool)
		migrate(t, pool)
		check(t, pool)
		if after := difyObjects(t, pool); !slices.Equal(before, after) {
			t.Fatalf("Dify's table changed:\nbefore %q\nafter  %q", before, after)
		}
	})
}
