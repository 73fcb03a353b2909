package redisclient

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is returned at once, without touching the network, by every call made while the breaker is open.
var ErrUnavailable = errors.New("redis unavailable (health breaker open)")

// BreakerOptions tune the health breaker; zero values take the defaults.
type BreakerOptions struct {
	// Failures is how many consecutive connection errors or timeouts open the breaker (default 3).
	Failures int
	// ProbeInterval is how often an open breaker pings Redis (default 200 ms); the first answered PING closes it.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one PING (default 250 ms).
	ProbeTimeout time.Duration
	// OnChange is told every transition (open true/false); it must not block.
	OnChange func(open bool)
}

// Breaker is the process's one view of Redis health. It sits in the client as a go-redis hook, so every Redis user of the
// process (limiter, token cache, revocation stream, device-flow state) shares it: after a few consecutive failures every
// call fails fast with ErrUnavailable instead of waiting for a Redis known to be down, while a background probe closes it
// as soon as Redis answers again.
type Breaker struct {
	opts     BreakerOptions
	open     atomic.Bool
	failures atomic.Int32
	probe    func(ctx context.Context) error

	mu      sync.Mutex
	probing bool
	closed  chan struct{} // closed by Close: stops a running probe
}

// NewBreaker returns a closed breaker; probe answers whether Redis is reachable (a PING that bypasses the breaker).
func NewBreaker(opts BreakerOptions, probe func(ctx context.Context) error) *Breaker {
	if opts.Failures <= 0 {
		opts.Failures = 3
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 200 * time.Millisecond
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 250 * time.Millisecond
	}
	return &Breaker{opts: opts, probe: probe, closed: make(chan struct{})}
}

// Open reports whether calls are currently failed fast.
func (b *Breaker) Open() bool { return b.open.Load() }

// Close stops the probe; the breaker keeps its state.
func (b *Breaker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.closed:
	default:
		close(b.closed)
	}
}

// Record feeds the outcome of one call into the breaker.
func (b *Breaker) Record(err error) {
	if !isConnectivityError(err) {
		b.failures.Store(0)
		return
	}
	if int(b.failures.Add(1)) >= b.opts.Failures {
		b.trip()
	}
}

func (b *Breaker) trip() {
	if b.open.Swap(true) {
		return
	}
	if b.opts.OnChange != nil {
		b.opts.OnChange(true)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.probing {
		return
	}
	select {
	case <-b.closed:
		return
	default:
	}
	b.probing = true
	go b.probeUntilHealthy()
}

func (b *Breaker) probeUntilHealthy() {
	t := time.NewTicker(b.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-b.closed:
			b.mu.Lock()
			b.probing = false
			b.mu.Unlock()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.ProbeTimeout)
		err := b.probe(withBypass(ctx))
		cancel()
		if err != nil {
			continue
		}
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
		b.failures.Store(0)
		if b.open.Swap(false) && b.opts.OnChange != nil {
			b.opts.OnChange(false)
		}
		return
	}
}

// isConnectivityError tells a Redis that cannot be reached or did not answer in time from an answer Redis gave (redis.Nil,
// a script error, WRONGTYPE...), which proves it is up.
func isConnectivityError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var redisErr redis.Error
	if errors.As(err, &redisErr) {
		// LOADING (restarting with a data set), MASTERDOWN, CLUSTERDOWN, TRYAGAIN: Redis answered but cannot serve.
		return redis.IsLoadingError(err) || hasAnyPrefix(redisErr.Error(), "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")
	}
	// io.EOF, connection reset and the like come through as plain errors from the connection.
	return true
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

type bypassKey struct{}

func withBypass(ctx context.Context) context.Context {
	return context.WithValue(ctx, bypassKey{}, true)
}

func bypassed(ctx context.Context) bool { v, _ := ctx.Value(bypassKey{}).(bool); return v }

// hook wires the breaker into a go-redis client.
type hook struct{ b *Breaker }

func (h hook) DialHook(next redis.DialHook) redis.DialHook {
	// Dials are not gated: the pool may dial on a context of its own, and the probe needs a connection to prove Redis is back.
	return next
}

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if bypassed(ctx) {
			return next(ctx, cmd)
		}
		if h.b.Open() {
			cmd.SetErr(ErrUnavailable)
			return ErrUnavailable
		}
		spent := ctx.Err() != nil // a caller whose deadline was used up elsewhere says nothing about Redis
		err := next(ctx, cmd)
		if !spent {
			h.b.Record(err)
		}
		return err
	}
}

func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if bypassed(ctx) {
			return next(ctx, cmds)
		}
		if h.b.Open() {
			for _, c := range cmds {
				c.SetErr(ErrUnavailable)
			}
			return ErrUnavailable
		}
		spent := ctx.Err() != nil
		err := next(ctx, cmds)
		if !spent {
			h.b.Record(err)
		}
		return err
	}
}
