package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/migrations"
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
	if _, err := pool.Exec(ctx, migrations.DifyDirectoryFixture); err != nil {
		t.Fatalf("testenv: directory fixture schema: %v", err)
	}
	return pool
}

// SeedDirectory writes a fixture into the Dify directory tables.
func SeedDirectory(t testing.TB, pool *pgxpool.Pool, f directory.Fixture) {
	t.Helper()
	if err := postgres.SeedDirectory(context.Background(), pool, f); err != nil {
		t.Fatalf("testenv: seed directory: %v", err)
	}
}
