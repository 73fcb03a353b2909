package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
)

const defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// EmptyPostgresURL creates a new, empty database on TEST_DATABASE_URL's server and returns its URL; it is dropped at cleanup.
func EmptyPostgresURL(t testing.TB) string {
	t.Helper()
	adminURL := getenv("TEST_DATABASE_URL", defaultPostgresURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		unavailable(t, "postgres at TEST_DATABASE_URL unreachable: %v", err)
	}
	defer admin.Close(context.Background())

	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "authgate_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("testenv: TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Pool opens a pool on url, closed at cleanup.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("testenv: open pool: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		unavailable(t, "postgres unreachable: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Postgres returns a pool on a new database with authgate's migrations and the Dify directory fixture schema applied.
func Postgres(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := Pool(t, EmptyPostgresURL(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatalf("testenv: migrate: %v", err)
	}
	if _, err := pool.Exec(ctx, dirfixture.Schema); err != nil {
		t.Fatalf("testenv: directory fixture schema: %v", err)
	}
	return pool
}

// SeedDirectory writes a fixture into the fixture copy of Dify's directory tables (dirfixture.Schema, which Postgres applies).
func SeedDirectory(t testing.TB, pool *pgxpool.Pool, f dirfixture.Fixture) {
	t.Helper()
	if err := SeedDirectoryContext(context.Background(), pool, f); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// SeedDirectoryContext is SeedDirectory for callers without a test (the benchmark): one batch, rows upserted by key.
func SeedDirectoryContext(ctx context.Context, pool *pgxpool.Pool, f dirfixture.Fixture) error {
	batch := &pgx.Batch{}
	for _, x := range f.Tenants {
		batch.Queue(`INSERT INTO tenants (id, name, status) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status`, x.ID, x.Name, x.Status)
	}
	for _, x := range f.Accounts {
		batch.Queue(`INSERT INTO accounts (id, email, name, status) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, status = EXCLUDED.status`,
			x.ID, x.Email, x.Name, x.Status)
	}
	for _, x := range f.Apps {
		batch.Queue(`INSERT INTO apps (id, tenant_id, name, mode, status, enable_api) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, mode = EXCLUDED.mode,
			status = EXCLUDED.status, enable_api = EXCLUDED.enable_api`,
			x.ID, x.TenantID, x.Name, x.Mode, x.Status, x.EnableAPI)
	}
	for _, x := range f.Joins {
		batch.Queue(`INSERT INTO tenant_account_joins (tenant_id, account_id, role, current) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant_id, account_id) DO UPDATE SET role = EXCLUDED.role, current = EXCLUDED.current`,
			x.TenantID, x.AccountID, x.Role, x.Current)
	}
	for _, x := range f.Integrates {
		batch.Queue(`INSERT INTO account_integrates (account_id, provider, open_id, encrypted_token) VALUES ($1, $2, $3, '')
			ON CONFLICT (provider, open_id) DO UPDATE SET account_id = EXCLUDED.account_id`, x.AccountID, x.Provider, x.OpenID)
	}
	if err := pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("seed directory: %w", err)
	}
	return nil
}
