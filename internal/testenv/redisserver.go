package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a private redis-server process that a fault test may stop and start again on the same port.
type RedisServer struct {
	t    testing.TB
	Addr string
	cmd  *exec.Cmd
	tls  *redisTLS // nil: plain TCP
	// argv, when set, gives the arguments that come before the common ones (a Sentinel's config file, Cluster mode).
	argv func(port string) []string
}

// StartRedisServer starts redis-server on a free loopback port; it is killed at cleanup.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	return startRedisServer(t, nil)
}

func startRedisServer(t testing.TB, tlsOpts *redisTLS) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(t, "redis-server not installed: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &RedisServer{t: t, Addr: addr, tls: tlsOpts}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's redis:// URL (rediss:// for a TLS server), database 0.
func (s *RedisServer) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// Client returns a new client for the server, closed at cleanup; for a TLS server it trusts the test's CA.
func (s *RedisServer) Client() *redis.Client {
	opts, err := redis.ParseURL(s.URL())
	if err != nil {
		s.t.Fatalf("testenv: %v", err)
	}
	if s.tls != nil {
		opts.TLSConfig = s.tls.client.Clone()
	}
	c := redis.NewClient(opts)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start (re)starts the server on its port and waits until it answers PING.
func (s *RedisServer) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--port", port}
	if s.tls != nil {
		args = s.tls.serverArgs(port)
	}
	if s.argv != nil {
		args = s.argv(port)
	}
	cmd := exec.Command("redis-server", append(args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning")...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("testenv: start redis-server: %v", err)
	}
	s.cmd = cmd
	opts := &redis.Options{Addr: s.Addr, MaxRetries: -1}
	if s.tls != nil {
		opts.TLSConfig = s.tls.client.Clone()
	}
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testenv: redis-server on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond) // bounded wait for the process to listen
	}
}

// Stop kills the server and waits for it to exit; the port is then refused until Start.
func (s *RedisServer) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *RedisServer) String() string { return fmt.Sprintf("redis-server %s", s.Addr) }

// Pause hangs the server (SIGSTOP): connections stay open and commands queue unanswered, as with a Redis stuck on a slow
// disk or a stalled VM.
func (s *RedisServer) Pause() {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatalf("testenv: pause of a stopped redis-server")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("testenv: SIGSTOP redis-server: %v", err)
	}
}

// Resume lets a paused server go on (SIGCONT); it then answers what was queued while it hung.
func (s *RedisServer) Resume() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatalf("testenv: SIGCONT redis-server: %v", err)
	}
}
