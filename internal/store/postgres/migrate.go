package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/authgate/authgate/migrations"
)

// VersionTable records authgate's migrations, apart from Dify's alembic_version.
const VersionTable = "authgate_schema_version"

// ErrIncompatibleSchema: an existing oauth_access_tokens table differs from the one authgate expects; migrate stops.
var ErrIncompatibleSchema = errors.New("postgres: existing oauth_access_tokens is incompatible")

// Migrate applies every pending migration. A table that Dify's own migration created is adopted after its columns and the
// per-device unique index are checked; an incompatible one stops with a readable diff and changes nothing. Concurrent runs
// (several replicas' migration Jobs) serialize on a Postgres advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := checkExistingTable(ctx, pool); err != nil {
		return err
	}
	provider, closeDB, err := newProvider(pool)
	if err != nil {
		return err
	}
	defer closeDB()
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate up: %w", err)
	}
	return nil
}

// MigrateDownForTests rolls back every authgate migration. It drops oauth_access_tokens, so it exists for tests only: no
// command exposes it.
func MigrateDownForTests(ctx context.Context, pool *pgxpool.Pool) error {
	provider, closeDB, err := newProvider(pool)
	if err != nil {
		return err
	}
	defer closeDB()
	if _, err := provider.DownTo(ctx, 0); err != nil {
		return fmt.Errorf("postgres: migrate down: %w", err)
	}
	return nil
}

func newProvider(pool *pgxpool.Pool) (*goose.Provider, func(), error) {
	db := stdlib.OpenDBFromPool(pool)
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("postgres: migration lock: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.SQL,
		goose.WithTableName(VersionTable), goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	return provider, func() { _ = db.Close() }, nil
}

type column struct {
	dataType string
	length   sql.NullInt64
	nullable bool
}

// expectedColumns is oauth_access_tokens as authgate reads and writes it (docs/reference/database.md).
var expectedColumns = map[string]column{
	"id":             {dataType: "uuid"},
	"subject_email":  {dataType: "character varying", length: sql.NullInt64{Int64: 255, Valid: true}},
	"subject_issuer": {dataType: "character varying", length: sql.NullInt64{Int64: 255, Valid: true}, nullable: true},
	"account_id":     {dataType: "uuid", nullable: true},
	"client_id":      {dataType: "character varying", length: sql.NullInt64{Int64: 64, Valid: true}},
	"device_label":   {dataType: "character varying", length: sql.NullInt64{Int64: 255, Valid: true}},
	"prefix":         {dataType: "character varying", length: sql.NullInt64{Int64: 8, Valid: true}},
	"token_hash":     {dataType: "character varying", length: sql.NullInt64{Int64: 64, Valid: true}, nullable: true},
	"created_at":     {dataType: "timestamp with time zone"},
	"last_used_at":   {dataType: "timestamp with time zone", nullable: true},
	"expires_at":     {dataType: "timestamp with time zone"},
	"revoked_at":     {dataType: "timestamp with time zone", nullable: true},
}

func (c column) String() string {
	s := c.dataType
	if c.length.Valid {
		s += fmt.Sprintf("(%d)", c.length.Int64)
	}
	if c.nullable {
		return s + " NULL"
	}
	return s + " NOT NULL"
}

// checkExistingTable compares an oauth_access_tokens that is already there (Dify's, or authgate's own) with the expected shape.
// Extra columns are tolerated: Dify may add some that authgate does not read. The columns come from pg_catalog, not
// information_schema: the latter hides the columns of a table the role has no privileges on, so a migration role that does
// not own Dify's table would skip this check and fail later with a bare "must be owner".
func checkExistingTable(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, NULL),
			CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod >= 4 THEN a.atttypmod - 4 END,
			NOT a.attnotnull
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND c.relname = 'oauth_access_tokens' AND c.relkind IN ('r', 'p')
			AND a.attnum > 0 AND NOT a.attisdropped`)
	if err != nil {
		return fmt.Errorf("postgres: reading oauth_access_tokens columns: %w", err)
	}
	found := map[string]column{}
	for rows.Next() {
		var name string
		var c column
		if err := rows.Scan(&name, &c.dataType, &c.length, &c.nullable); err != nil {
			rows.Close()
			return fmt.Errorf("postgres: reading oauth_access_tokens columns: %w", err)
		}
		found[name] = c
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: reading oauth_access_tokens columns: %w", err)
	}
	if len(found) == 0 {
		return nil // nothing to adopt
	}
	var diff []string
	for _, name := range sortedKeys(expectedColumns) {
		want := expectedColumns[name]
		got, ok := found[name]
		switch {
		case !ok:
			diff = append(diff, fmt.Sprintf("  column %s: missing, want %s", name, want))
		case got.dataType != want.dataType || got.nullable != want.nullable ||
			(want.length.Valid && got.length.Valid && got.length.Int64 < want.length.Int64):
			diff = append(diff, fmt.Sprintf("  column %s: have %s, want %s", name, got, want))
		}
	}
	var indexDef string
	err = pool.QueryRow(ctx, `SELECT indexdef FROM pg_indexes
		WHERE schemaname = current_schema() AND indexname = 'uq_oauth_active_per_device'`).Scan(&indexDef)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: reading oauth_access_tokens indexes: %w", err)
	}
	if err == nil && !isPerDeviceUniqueIndex(indexDef) {
		diff = append(diff, "  index uq_oauth_active_per_device: have "+indexDef+
			", want UNIQUE (subject_email, subject_issuer, client_id, device_label) WHERE revoked_at IS NULL")
	}
	var hashUnique bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (
		SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = to_regclass('oauth_access_tokens') AND i.indisunique AND i.indnatts = 1
			AND i.indpred IS NULL AND a.attname = 'token_hash')`).Scan(&hashUnique); err != nil {
		return fmt.Errorf("postgres: reading oauth_access_tokens indexes: %w", err)
	}
	if !hashUnique {
		// Mint relies on it to refuse a hash that is already in use, and revocation frees the hash by setting it NULL.
		diff = append(diff, "  token_hash: no UNIQUE constraint or index on (token_hash) alone")
	}
	if len(diff) > 0 {
		return fmt.Errorf("%w:\n%s", ErrIncompatibleSchema, strings.Join(diff, "\n"))
	}
	return nil
}

func isPerDeviceUniqueIndex(def string) bool {
	def = strings.ToLower(def)
	return strings.Contains(def, "unique") &&
		strings.Contains(def, "(subject_email, subject_issuer, client_id, device_label)") &&
		strings.Contains(def, "revoked_at is null")
}

func sortedKeys(m map[string]column) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a stable order keeps the diff readable and testable
	return keys
}
