package redisclient_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/testenv"
)

// A hung Redis opens the breaker after a few timed-out calls; then calls fail at once, and the probe closes it soon after
// Redis answers again.
func TestBreakerOpensOnHangAndClosesOnResume(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	var opened, closed atomic.Int32
	c, err := redisclient.Open(redisclient.Options{URL: srv.URL(), Breaker: redisclient.BreakerOptions{
		OnChange: func(open bool) {
			if open {
				opened.Add(1)
			} else {
				closed.Add(1)
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("set before the hang: %v", err)
	}

	srv.Pause()
	t.Cleanup(srv.Resume)
	for i := 0; i < 10 && !c.Breaker.Open(); i++ {
		callCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := c.Get(callCtx, "k").Err()
		cancel()
		if err == nil {
			t.Fatal("a GET answered while Redis was stopped")
		}
	}
	if !c.Breaker.Open() || opened.Load() != 1 {
		t.Fatalf("breaker open = %v after repeated timeouts (opened %d times)", c.Breaker.Open(), opened.Load())
	}
	// Open: the call fails with ErrUnavailable even with a long deadline, without waiting for it.
	callCtx, cancel := context.WithTimeout(ctx, time.Hour)
	err = c.Get(callCtx, "k").Err()
	cancel()
	if !errors.Is(err, redisclient.ErrUnavailable) {
		t.Fatalf("GET with the breaker open: %v, want ErrUnavailable", err)
	}

	srv.Resume()
	testenv.Eventually(t, 5*time.Second, "breaker closes after Redis resumes", func() bool { return !c.Breaker.Open() })
	if closed.Load() != 1 {
		t.Fatalf("close transitions = %d, want 1", closed.Load())
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET after recovery = %q, %v", v, err)
	}
}

// Answers from Redis, even errors such as a missing key or a script error, prove it is up and never open the breaker.
func TestBreakerIgnoresRedisAnswers(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c, err := redisclient.Open(redisclient.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	for range 10 {
		_ = c.Get(ctx, "missing").Err()
		_ = c.Eval(ctx, "return redis.error_reply('boom')", nil).Err()
	}
	if c.Breaker.Open() {
		t.Fatal("breaker opened on answers from a healthy Redis")
	}
}

// A killed Redis is refused at once: the breaker opens and closes again when a new process listens on the port.
func TestBreakerFollowsKillAndRestart(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c, err := redisclient.Open(redisclient.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	srv.Stop()
	for i := 0; i < 10 && !c.Breaker.Open(); i++ {
		_ = c.Ping(ctx).Err()
	}
	if !c.Breaker.Open() {
		t.Fatal("breaker still closed with Redis refusing connections")
	}
	srv.Start()
	testenv.Eventually(t, 5*time.Second, "breaker closes after restart", func() bool { return !c.Breaker.Open() })
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}

func TestOpenRefusesBadURLWithoutQuotingIt(t *testing.T) {
	_, err := redisclient.Open(redisclient.Options{URL: "http://user:s3cret@host"})
	if err == nil {
		t.Fatal("a non-redis URL was accepted")
	}
	if got := err.Error(); got == "" || contains(got, "s3cret") {
		t.Fatalf("error %q quotes the URL", got)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
