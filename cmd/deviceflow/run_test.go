package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/testenv"
)

// cmdTestSecretKey is a SECRET_KEY deviceflow accepts outside the dev stack (long enough, not a published sample).
const cmdTestSecretKey = "deviceflow-cmd-test-secret-key-0123456789"

func env(vars map[string]string) config.Lookup {
	return func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
}

func TestServeMigratePrune(t *testing.T) {
	dbURL := testenv.EmptyPostgresURL(t)
	ctx := t.Context()
	if err := Run(ctx, []string{"migrate"}, env(map[string]string{"DATABASE_URL": dbURL}), io.Discard, nil); err != nil {
		t.Fatalf("migrate with only DATABASE_URL: %v", err)
	}
	pool := testenv.Pool(t, dbURL)
	if _, err := pool.Exec(ctx, dirfixture.Schema); err != nil {
		t.Fatal(err)
	}
	if err := Run(ctx, []string{"prune"}, env(map[string]string{"DATABASE_URL": dbURL}), io.Discard, nil); err != nil {
		t.Fatalf("prune: %v", err)
	}

	vars := map[string]string{
		"DATABASE_URL": dbURL, "REDIS_URL": testenv.RedisURL(t), "SECRET_KEY": cmdTestSecretKey,
		"DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0", "CONSOLE_API_URL": "https://api.test",
	}
	a, stop := startServing(t, vars)
	get := func(url string) (int, map[string]any) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body
	}
	if status, body := get("http://" + a.api.String() + "/.well-known/oauth-authorization-server/openapi/v1"); status != 200 ||
		body["issuer"] != "https://api.test/openapi/v1" {
		t.Fatalf("metadata: %d %v", status, body)
	}
	requestDeviceCode(t, a.api)
	// devstack's dev sign-in (a console session for anyone) must never exist in the production server.
	for _, path := range []string{"/signin", "/device/signin", "/openapi/v1/signin"} {
		res, err := http.Get("http://" + a.api.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound || len(res.Cookies()) != 0 {
			t.Fatalf("GET %s = %d with cookies %v, want 404 and none", path, res.StatusCode, res.Cookies())
		}
	}
	if status, _ := get("http://" + a.admin.String() + "/readyz"); status != http.StatusOK {
		t.Fatalf("readyz %d", status)
	}
	if status, _ := get("http://" + a.admin.String() + "/healthz"); status != http.StatusOK {
		t.Fatalf("healthz %d", status)
	}
	stop()
}

// TestDeviceCodeOverTLSRedis: with a rediss:// REDIS_URL the device flow keeps its state on a TLS-only Redis.
// skip_verify because deviceflow trusts the system roots, which a test process cannot swap (extauthz's TestRedisOverTLS
// shows verification is on without it).
func TestDeviceCodeOverTLSRedis(t *testing.T) {
	rs := testenv.StartRedisServerTLS(t)
	a, stop := startServing(t, map[string]string{
		"DATABASE_URL": testenv.Postgres(t).Config().ConnString(), "REDIS_URL": rs.URL() + "?skip_verify=true",
		"SECRET_KEY": cmdTestSecretKey, "DEVICEFLOW_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0", "CONSOLE_API_URL": "https://api.test",
	})
	defer stop()
	requestDeviceCode(t, a.api)
	keys, err := rs.Client().Keys(context.Background(), "device_code:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("device codes on the TLS Redis: %v, %v", keys, err)
	}
}

func requestDeviceCode(t *testing.T, api net.Addr) {
	t.Helper()
	res, err := http.Post("http://"+api.String()+"/openapi/v1/oauth/device/code", "application/json",
		strings.NewReader(`{"client_id":"difyctl"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("device code: %d", res.StatusCode)
	}
}

type serveAddrs struct{ api, admin net.Addr }

// startServing runs Run with vars until the returned stop, which waits for a graceful shutdown.
func startServing(t *testing.T, vars map[string]string) (serveAddrs, func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(t.Context())
	up := make(chan serveAddrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, nil, env(vars), io.Discard, func(api, admin net.Addr) { up <- serveAddrs{api, admin} })
	}()
	select {
	case a := <-up:
		return a, func() { stopServe(t, cancel, done) }
	case err := <-done:
		cancel()
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not start within 30 s")
	}
	return serveAddrs{}, nil
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	full := map[string]string{"DATABASE_URL": "postgres://x", "REDIS_URL": "redis://x", "SECRET_KEY": cmdTestSecretKey}
	cases := []struct {
		args  []string
		drop  string
		set   map[string]string
		wantV string
	}{
		{nil, "DATABASE_URL", nil, "DATABASE_URL"},
		{nil, "REDIS_URL", nil, "REDIS_URL"},
		{nil, "SECRET_KEY", nil, "SECRET_KEY"},
		{nil, "", map[string]string{"SECRET_KEY": "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"}, "SECRET_KEY"}, // Dify's sample
		{nil, "", map[string]string{"SECRET_KEY": "short"}, "SECRET_KEY"},
		{nil, "", map[string]string{"OAUTH_TTL_DAYS": "two"}, "OAUTH_TTL_DAYS"},
		{nil, "", map[string]string{"TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS"},
		{nil, "", map[string]string{"CONSOLE_WEB_URL": "console"}, "CONSOLE_WEB_URL"},
		{[]string{"migrate"}, "DATABASE_URL", nil, "DATABASE_URL"},
		{[]string{"prune"}, "", map[string]string{"OAUTH_ACCESS_TOKEN_RETENTION_DAYS": "x"}, "OAUTH_ACCESS_TOKEN_RETENTION_DAYS"},
	}
	for _, c := range cases {
		vars := map[string]string{}
		for k, v := range full {
			vars[k] = v
		}
		delete(vars, c.drop)
		for k, v := range c.set {
			vars[k] = v
		}
		err := Run(t.Context(), c.args, env(vars), io.Discard, nil)
		if err == nil || !strings.HasPrefix(err.Error(), c.wantV+": ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v without %s / with %v: %v", c.args, c.drop, c.set, err)
		}
	}
	if err := Run(t.Context(), []string{"explode"}, env(full), io.Discard, nil); err == nil {
		t.Error("unknown command accepted")
	}
}

// A URL that fails to parse must not put its password on stderr: go-redis passes on net/url's error, which quotes the
// whole URL.
func TestBadURLErrorsKeepPasswordsOut(t *testing.T) {
	const password = "s3cret-pw"
	cases := []struct {
		args  []string
		set   map[string]string
		wantV string
	}{
		{nil, map[string]string{"REDIS_URL": "redis://:" + password + "@redis:badport/0"}, "REDIS_URL"},
		{nil, map[string]string{"REDIS_URL": "rediss://user:" + password + "@[::1/0"}, "REDIS_URL"},
		{nil, map[string]string{"DATABASE_URL": "postgres://dify:" + password + "@db:badport/dify"}, "DATABASE_URL"},
		{[]string{"migrate"}, map[string]string{"DATABASE_URL": "postgres://dify:" + password + "@db/dify?sslmode=bogus"}, "DATABASE_URL"},
	}
	for _, c := range cases {
		vars := map[string]string{"DATABASE_URL": "postgres://x", "REDIS_URL": "redis://x", "SECRET_KEY": cmdTestSecretKey}
		for k, v := range c.set {
			vars[k] = v
		}
		err := Run(t.Context(), c.args, env(vars), io.Discard, nil)
		if err == nil || !strings.HasPrefix(err.Error(), c.wantV+": ") {
			t.Errorf("%v with %v: %v, want an error naming %s", c.args, c.set, err, c.wantV)
			continue
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("%v with %v: the error shows the password: %v", c.args, c.set, err)
		}
	}
}

// stopServe cancels a running serve and fails the test unless it shuts down gracefully within a generous deadline.
func stopServe(t *testing.T, stop func(), done <-chan error) {
	t.Helper()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("graceful shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30 s")
	}
}
