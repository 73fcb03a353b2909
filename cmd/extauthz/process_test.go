package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/enterprise/enterprisetest"
	"github.com/authgate/authgate/internal/testenv"
)

// TestWarmCheckCost: on a warm cache a Check makes exactly one Redis command (the limiter's script) and no Postgres call.
// The token's last use, written once per TOKEN_LAST_USED_INTERVAL off the Check path, is written during the warm-up.
func TestWarmCheckCost(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	w.redisURL = rs.URL()
	srv := w.start(map[string]string{"OPENAPI_RATE_LIMIT_PER_TOKEN": "100000"})
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	run := "/openapi/v1/apps/" + appOK + "/run"
	paths := []struct{ method, path string }{{"GET", "/openapi/v1/me"}, {"POST", run}, {"GET", "/openapi/v1/apps?workspace_id=" + tenantMain}}
	// Warm up: token entry, membership verdict and app are cached; wait for the verdict to reach the local layer.
	for _, p := range paths {
		srv.check(t, p.method, p.path, bearer(ada))
	}
	rdb := rs.Client()
	w.waitLastUsed(adaID, time.Time{})
	testenv.Eventually(t, 5*time.Second, "warm", func() bool {
		before := redisCommands(t, rdb)
		acquires := srv.app.pool.Stat().AcquireCount()
		for _, p := range paths {
			if resp := srv.check(t, p.method, p.path, bearer(ada)); resp.GetOkResponse() == nil {
				t.Fatalf("%s %s denied: %s", p.method, p.path, resp.GetDeniedResponse().GetBody())
			}
		}
		dr, dp := redisCommands(t, rdb)-before, srv.app.pool.Stat().AcquireCount()-acquires
		return dr == len(paths) && dp == 0
	})
	before := redisCommands(t, rdb)
	acquires := srv.app.pool.Stat().AcquireCount()
	const n = 30
	for i := range n {
		p := paths[i%len(paths)]
		srv.check(t, p.method, p.path, bearer(ada))
	}
	if got := redisCommands(t, rdb) - before; got != n {
		t.Errorf("%d Redis commands for %d warm checks, want %d", got, n, n)
	}
	if got := srv.app.pool.Stat().AcquireCount() - acquires; got != 0 {
		t.Errorf("%d Postgres acquires on the warm path", got)
	}
}

// redisCommands counts the commands clients sent, except those of the revocation follower (XREAD) and of the measurement
// itself (INFO). commandstats also counts the commands a Lua script runs; the limiter's script is one round trip and one
// EVALSHA, so its sorted-set internals are left out.
func redisCommands(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		switch strings.TrimPrefix(name, "cmdstat_") {
		case "xread", "xrevrange", "xinfo", "info", "ping", "hello", "client", "client|setinfo", "client|setname",
			"time", "zadd", "zcard", "zrange", "zremrangebyscore", "expire":
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		n, err := strconv.Atoi(calls)
		if err != nil {
			t.Fatalf("commandstats line %q", line)
		}
		total += n
	}
	return total
}

// TestGracefulShutdownDrains: a Check in flight when shutdown starts still gets its answer; new connections are refused.
func TestGracefulShutdownDrains(t *testing.T) {
	w := newWorld(t)
	ent := enterprisetest.NewServer(t)
	ent.SetAccessMode(appOK, "public")
	ent.SetDelay(time.Second)
	srv := w.start(eeVars(ent, "CHECK_TIMEOUT", "10s"))
	ada, adaID := w.accountToken(accountActive, "ada@example.com")

	done := make(chan map[string]string, 1)
	go func() {
		resp, err := srv.client.Check(context.Background(), checkRequest("POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada)))
		if err != nil || resp.GetOkResponse() == nil {
			t.Errorf("in-flight check: %v, %v", resp, err)
			done <- nil
			return
		}
		got := map[string]string{}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		done <- got
	}()
	testenv.Eventually(t, 5*time.Second, "check reached the enterprise service", func() bool { return ent.RequestCount() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.app.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case got := <-done:
		if got != nil && got["x-authgate-token-id"] != adaID {
			t.Errorf("drained check headers %v", got)
		}
	default:
		t.Fatal("shutdown returned before the in-flight check was answered")
	}
	if _, err := srv.client.Check(ctx, checkRequest("GET", "/openapi/v1/me", bearer(ada))); err == nil {
		t.Error("a stopped server answered")
	}
}

// TestMaxConnectionAge: the server ages out a client's long-lived HTTP/2 connection (GOAWAY), so Envoy reconnects and
// spreads over replicas.
func TestMaxConnectionAge(t *testing.T) {
	w := newWorld(t)
	srv := w.start(map[string]string{"GRPC_MAX_CONNECTION_AGE": "300ms", "SHUTDOWN_TIMEOUT": "1s"})
	conn, err := grpc.NewClient(srv.app.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	if _, err := client.Check(context.Background(), checkRequest("GET", "/openapi/v1/_health", nil)); err != nil {
		t.Fatal(err)
	}
	if conn.GetState() != connectivity.Ready {
		t.Fatalf("state %v after a check", conn.GetState())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !conn.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("connection never aged out")
	}
}
