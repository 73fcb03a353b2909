package redisclient_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// Calls that fail only because their callers' deadlines pass, while Redis itself is answering (here: blocking pops on
// empty lists, which Redis holds until their own 5 s timeout), do not open the breaker: the PING sent to confirm them is
// answered.
func TestBreakerIgnoresCallersOwnDeadlines(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	var opened atomic.Int32
	c, err := redisclient.Open(redisclient.Options{URL: srv.URL(), Breaker: redisclient.BreakerOptions{
		OnChange: func(open bool) {
			if open {
				opened.Add(1)
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	var wg sync.WaitGroup
	// Ten connections in the pool first, so that the calls below are not preceded by connection set-up, which Redis
	// answers.
	for i := range 10 {
		wg.Go(func() { _ = c.BLPop(ctx, 100*time.Millisecond, fmt.Sprintf("warm-%d", i)).Err() })
	}
	wg.Wait()
	var timedOut atomic.Int32
	for i := range 10 {
		wg.Go(func() {
			deadline := time.Now().Add(50 * time.Millisecond)
			callCtx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			if err := c.BLPop(callCtx, 5*time.Second, fmt.Sprintf("empty-%d", i)).Err(); err != nil && !time.Now().Before(deadline) {
				timedOut.Add(1)
			}
		})
	}
	wg.Wait()
	if timedOut.Load() != 10 {
		t.Fatalf("%d of 10 calls ran out of their deadline, want all", timedOut.Load())
	}
	testenv.Eventually(t, 5*time.Second, "the confirming PING to finish", func() bool { return !c.Breaker.Confirming() })
	if c.Breaker.Open() || opened.Load() != 0 {
		t.Fatalf("breaker opened (%d times) on callers' own deadlines while Redis answered", opened.Load())
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET after the timeouts: %v", err)
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
