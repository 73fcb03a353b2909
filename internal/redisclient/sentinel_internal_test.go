package redisclient

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A listed sentinel that accepts a connection and never answers is given up after REDIS_SENTINEL_SOCKET_TIMEOUT, however
// long the deadline go-redis sets; the master's connections keep the deadlines they are given.
func TestSentinelExchangesAreBounded(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never written to
		}
	}()
	dial := sentinelDialer([]string{silent.Addr().String()}, 100*time.Millisecond, time.Second, nil)
	conn, err := dial(context.Background(), "tcp", silent.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := conn.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read from a silent sentinel: %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second): // generous: the bound is 100 ms, the requested deadline an hour
		t.Fatal("a read from a silent sentinel was not cut short")
	}

	// Another address (the master, found through the sentinel) keeps the deadlines go-redis sets.
	master := sentinelDialer(nil, 100*time.Millisecond, time.Second, nil)
	mc, err := master(context.Background(), "tcp", silent.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if _, bounded := mc.(*boundedConn); bounded {
		t.Fatal("a connection to an address that is not a listed sentinel is bounded")
	}
}
