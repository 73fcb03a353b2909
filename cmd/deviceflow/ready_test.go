package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// TestReadinessIgnoresSharedDependencies: readiness reflects the process (docs/operations.md). A Redis every replica shares going
// away must not take them all out of the Service at once.
func TestReadinessIgnoresSharedDependencies(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	vars := map[string]string{
		"DATABASE_URL": testenv.EmptyPostgresURL(t), "REDIS_URL": rs.URL(), "SECRET_KEY": cmdTestSecretKey,
		"DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0",
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	up := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, nil, env(vars), io.Discard, func(_, admin net.Addr) { up <- admin })
	}()
	var admin net.Addr
	select {
	case admin = <-up:
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start within 30 s")
	}
	readyz := func() int {
		t.Helper()
		res, err := http.Get("http://" + admin.String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if status := readyz(); status != http.StatusOK {
		t.Fatalf("readyz %d with Redis up", status)
	}
	rs.Stop()
	if status := readyz(); status != http.StatusOK {
		t.Fatalf("readyz %d during a Redis outage, want 200", status)
	}
	stopServe(t, stop, done)
}
