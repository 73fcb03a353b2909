package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// docs/reference/database.md (retention): the server prunes (at start, then every PRUNE_INTERVAL) when ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK is left at
// its default.
func TestServeRunsThePruner(t *testing.T) {
	pool := testenv.Postgres(t)
	plain, err := tokens.Generate(tokens.Account)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := postgres.NewTokenStore(pool).Mint(t.Context(), tokens.MintRequest{
		Subject:  tokens.AccountSubject("0a000000-0000-4000-8000-0000000000a1", "ann@example.com"),
		ClientID: "difyctl", DeviceLabel: "old", Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(plain),
		Now: now.Add(-100 * 24 * time.Hour), ExpiresAt: now.Add(-90 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"DATABASE_URL": pool.Config().ConnString(), "REDIS_URL": testenv.RedisURL(t), "SECRET_KEY": cmdTestSecretKey,
		"DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0",
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	up := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nil, env(vars), io.Discard, func(net.Addr, net.Addr) { up <- struct{}{} }) }()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start within 30 s")
	}
	testenv.Eventually(t, 5*time.Second, "the expired row pruned by the server", func() bool {
		var n int
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM oauth_access_tokens`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	stopServe(t, stop, done)
}
