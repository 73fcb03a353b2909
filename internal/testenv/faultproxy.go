package testenv

import (
	"net"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy on loopback in front of a real server (the shared Postgres, say), so a test can make that
// server look hung or down to the code under test without touching the server itself:
//
//   - Pause: bytes stop flowing both ways on every connection, open or new (new ones are accepted, then hang), as with a
//     server stuck on a slow disk or a stalled VM. Resume lets them flow again.
//   - Stop: open connections are reset and new ones refused, as with a server that crashed. Start listens again on the
//     same address.
//
// Point the code under test at Addr instead of the server.
type FaultProxy struct {
	t      testing.TB
	Addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener          // nil while stopped
	gate  chan struct{}         // closed while bytes may flow; replaced by Pause
	reset chan struct{}         // closed by Stop: frees copies held at the gate; replaced by Start
	conns map[net.Conn]struct{} // every open connection, both ends
	wg    sync.WaitGroup
}

// StartFaultProxy listens on a free loopback port and forwards every connection to target; it is stopped at cleanup.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	p := &FaultProxy{t: t, target: target, gate: make(chan struct{}), reset: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.gate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: fault proxy: %v", err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.Stop()
		p.wg.Wait()
	})
	return p
}

// Pause stops forwarding: every connection hangs until Resume.
func (p *FaultProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default: // already paused
	}
}

// Resume forwards again, starting with what was held back.
func (p *FaultProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// Stop refuses new connections and resets the open ones.
func (p *FaultProxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	_ = p.ln.Close()
	p.ln = nil
	close(p.reset)
	for c := range p.conns {
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // a reset, as from a crashed server, rather than an orderly close
		}
		_ = c.Close()
	}
	clear(p.conns)
}

// Start listens again on Addr after Stop.
func (p *FaultProxy) Start() {
	p.t.Helper()
	p.mu.Lock()
	running := p.ln != nil
	p.mu.Unlock()
	if running {
		return
	}
	// The port was ours a moment ago; another process may hold it briefly (TIME_WAIT does not block a listener).
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.Addr)
		if err == nil {
			p.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("testenv: fault proxy: listen again on %s: %v", p.Addr, err)
		}
		time.Sleep(20 * time.Millisecond) // the polling interval of a bounded wait
	}
}

func (p *FaultProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	select {
	case <-p.reset:
		p.reset = make(chan struct{})
	default:
	}
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return // closed by Stop
			}
			p.wg.Go(func() { p.forward(client) })
		}
	})
}

// forward connects client to the target and copies both ways through the gate.
func (p *FaultProxy) forward(client net.Conn) {
	reset, ok := p.track(client)
	if !ok {
		_ = client.Close()
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if _, ok := p.track(server); !ok {
		_ = server.Close()
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	p.wg.Go(func() { p.copy(server, client, reset); done <- struct{}{} })
	p.wg.Go(func() { p.copy(client, server, reset); done <- struct{}{} })
	<-done // one direction ended: the deferred closes end the other
}

// copy forwards src to dst until either fails; each chunk waits at the gate, so a paused proxy holds the data and the
// sender's buffers fill up.
func (p *FaultProxy) copy(dst, src net.Conn, reset <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			select {
			case <-gate:
			case <-reset:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF included: neither protocol this stands in for half-closes
		}
	}
}

// track registers an open connection, unless the proxy was stopped meanwhile, and returns the Stop signal it answers to.
func (p *FaultProxy) track(c net.Conn) (<-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return nil, false
	}
	p.conns[c] = struct{}{}
	return p.reset, true
}

func (p *FaultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}
