package testenv_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line on c and reads the echo, waiting at most within.
func roundTrip(c net.Conn, r *bufio.Reader, line string, within time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(within))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return got[:len(got)-1], nil
}

func TestFaultProxyPausesStopsAndStarts(t *testing.T) {
	p := testenv.StartFaultProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, "one", 5*time.Second); err != nil || got != "one" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	// Paused: the connection hangs (a deadline is what ends the wait), and so does a new one.
	p.Pause()
	if _, err := roundTrip(c, r, "two", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("paused round trip: %v, want a timeout", err)
	}
	fresh, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatalf("a paused proxy still accepts: %v", err)
	}
	defer fresh.Close()
	freshR := bufio.NewReader(fresh)
	if _, err := roundTrip(fresh, freshR, "new", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new connection while paused: %v, want a timeout", err)
	}
	// Resumed: what was held back arrives.
	p.Resume()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("held-back echo after resume: %q, %v", got, err)
	}
	_ = fresh.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := freshR.ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("held-back echo on the new connection: %q, %v", got, err)
	}

	// Stopped: open connections are reset and new ones refused.
	p.Stop()
	if _, err := roundTrip(c, r, "three", 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("round trip on a stopped proxy: %v, want a reset", err)
	}
	if c2, err := net.DialTimeout("tcp", p.Addr, 2*time.Second); err == nil {
		c2.Close()
		t.Fatal("a stopped proxy accepted a connection")
	}

	// Started again on the same address.
	p.Start()
	c3, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, bufio.NewReader(c3), "four", 5*time.Second); err != nil || got != "four" {
		t.Fatalf("after Start: %q, %v", got, err)
	}
}

// A proxy stopped while paused lets go of the connections it held back.
func TestFaultProxyStopWhilePaused(t *testing.T) {
	p := testenv.StartFaultProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Pause()
	_, _ = c.Write([]byte("held\n"))
	p.Stop()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a proxy stopped while paused: %v, want a reset", err)
	}
}
