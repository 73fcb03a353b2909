package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// TestServeRecordsLastUse: the server records the use of a bearer-authenticated request in last_used_at, and with
// TOKEN_LAST_USED_INTERVAL=0 it writes nothing (the shutdown, which writes what is pending, is awaited before looking).
func TestServeRecordsLastUse(t *testing.T) {
	pool := testenv.Postgres(t)
	const accountID = "0a000000-0000-4000-8000-0000000000a1"
	testenv.SeedDirectory(t, pool, dirfixture.Fixture{
		Accounts: []directory.Account{{ID: accountID, Email: "ann@example.com", Name: "Ann", Status: "active"}}})
	store := postgres.NewTokenStore(pool)
	mint := func(device string) (plain, id string) {
		t.Helper()
		plain, err := tokens.Generate(tokens.Account)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		m, err := store.Mint(t.Context(), tokens.MintRequest{Subject: tokens.AccountSubject(accountID, "ann@example.com"),
			ClientID: "difyctl", DeviceLabel: device, Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(plain),
			Now: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return plain, m.Token.ID
	}
	lastUsed := func(id string) *time.Time {
		var at *time.Time
		if err := pool.QueryRow(context.Background(), `SELECT last_used_at FROM oauth_access_tokens WHERE id = $1`, id).
			Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	me := func(addrs serveAddrs, plain string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addrs.api.String()+"/openapi/v1/me", nil)
		req.Header.Set("Authorization", "Bearer "+plain)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("/me: %d", res.StatusCode)
		}
	}
	vars := func(extra ...string) map[string]string {
		v := map[string]string{"DATABASE_URL": pool.Config().ConnString(), "REDIS_URL": testenv.RedisURL(t), "SECRET_KEY": cmdTestSecretKey,
			"DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0"}
		for i := 0; i+1 < len(extra); i += 2 {
			v[extra[i]] = extra[i+1]
		}
		return v
	}

	off, offID := mint("off")
	addrs, stop := startServing(t, vars("TOKEN_LAST_USED_INTERVAL", "0"))
	me(addrs, off)
	stop()
	if got := lastUsed(offID); got != nil {
		t.Fatalf("TOKEN_LAST_USED_INTERVAL=0 wrote last_used_at %v", got)
	}

	on, onID := mint("on")
	before := time.Now().Truncate(time.Microsecond)
	addrs, stop = startServing(t, vars())
	defer stop()
	me(addrs, on)
	testenv.Eventually(t, 10*time.Second, "last_used_at written", func() bool {
		got := lastUsed(onID)
		return got != nil && !got.Before(before)
	})
}
