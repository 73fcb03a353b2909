package main

import (
	"context"
	"io"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
)

// TestServeFromDifyVariablesOnRedisCluster: with neither DATABASE_URL nor REDIS_URL, deviceflow migrates and serves from
// Dify's DB_* and REDIS_USE_CLUSTERS variables, and a device login's two keys land in one slot of a 3-master cluster.
func TestServeFromDifyVariablesOnRedisCluster(t *testing.T) {
	u, err := url.Parse(testenv.EmptyPostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	pw, _ := u.User.Password()
	db := map[string]string{"DB_HOST": u.Hostname(), "DB_PORT": port, "DB_USERNAME": u.User.Username(), "DB_PASSWORD": pw,
		"DB_DATABASE": strings.TrimPrefix(u.Path, "/"), "DB_EXTRAS": "sslmode=disable"}
	if err := Run(t.Context(), []string{"migrate"}, env(db), io.Discard, nil); err != nil {
		t.Fatalf("migrate from DB_*: %v", err)
	}

	cl := testenv.StartRedisCluster(t)
	vars := map[string]string{"REDIS_USE_CLUSTERS": "true", "REDIS_CLUSTERS": strings.Join(cl.Addrs(), ","),
		"SECRET_KEY": cmdTestSecretKey, "DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0", "CONSOLE_API_URL": "https://api.test"}
	for k, v := range db {
		vars[k] = v
	}
	a, stop := startServing(t, vars)
	defer stop()
	for range 3 {
		requestDeviceCode(t, a.api)
	}
	ctx := context.Background()
	var logins atomic.Int32 // ForEachMaster runs its function on every master at once
	err = cl.Client().ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		devices, err := node.Keys(ctx, "device_code:*").Result()
		if err != nil {
			return err
		}
		users, err := node.Keys(ctx, "user_code:*").Result()
		if err != nil {
			return err
		}
		if len(devices) != len(users) {
			t.Errorf("node %s holds %d device codes and %d user codes: a login's keys are split", node.Options().Addr,
				len(devices), len(users))
		}
		logins.Add(int32(len(devices)))
		return nil
	})
	if err != nil || logins.Load() != 3 {
		t.Fatalf("device logins on the cluster = %d, %v; want 3", logins.Load(), err)
	}
}
