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
	// ConfirmTimeout bounds the PING that decides whether failures that were only their callers' deadlines passing
	// mean Redis is down (default 100 ms).
	ConfirmTimeout time.Duration
	// OnChange is told every transition (open true/false); it must not block.
	OnChange func(open bool)
}

// Breaker is the process's one view of Redis health. It sits in the client as a go-redis hook, so every Redis user of the
// process (limiter, token cache, revocation stream, device-flow state) shares it: after a few consecutive failures every
// call fails fast with ErrUnavailable instead of waiting for a Redis known to be down, while a background probe closes it
// as soon as Redis answers again.
//
// A call that fails because its caller's deadline passed says little about Redis on its own: callers give Redis calls
// short deadlines (half a Check's), and a process that stalls (a busy machine, a burst of work queued on the
// connections) misses them while Redis answers everything it is sent. So such a failure is not counted when Redis
// answered any other call while it waited; when Redis answered nothing, it counts, but the failures open the breaker only
// if a PING, sent then, is not answered within ConfirmTimeout either. A hung Redis still opens it after a few failures
// and one short PING; a healthy one behind a stall does not turn every Check into a fast failure for a probe interval.
// Any other failure (a refused or dropped connection, LOADING...) counts at once.
type Breaker struct {
	opts     BreakerOptions
	open     atomic.Bool
	failures atomic.Int32
	probe    func(ctx context.Context) error
	// answers counts calls Redis answered (errors included), so a call can tell whether Redis answered anything while it
	// waited.
	answers    atomic.Uint64
	confirming atomic.Bool // a confirming PING is in flight

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
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = 100 * time.Millisecond
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

// record feeds the outcome of one call into the breaker. callerDeadline is whether the caller's own deadline had passed
// when the call returned, answersBefore what answers counted when it was sent.
func (b *Breaker) record(err error, callerDeadline bool, answersBefore uint64) {
	if !isConnectivityError(err) {
		b.answers.Add(1)
		b.failures.Store(0)
		return
	}
	if callerDeadline && isTimeout(err) {
		if b.answers.Load() != answersBefore {
			return // Redis answered another call meanwhile: this one only ran out of its caller's time
		}
		if int(b.failures.Add(1)) >= b.opts.Failures {
			b.confirm()
		}
		return
	}
	if int(b.failures.Add(1)) >= b.opts.Failures {
		b.trip()
	}
}

// confirm sends one PING, past the breaker, and opens the breaker only if Redis answers neither it nor any other call
// within ConfirmTimeout.
func (b *Breaker) confirm() {
	if b.open.Load() || !b.confirming.CompareAndSwap(false, true) {
		return
	}
	select {
	case <-b.closed:
		b.confirming.Store(false)
		return
	default:
	}
	seen := b.answers.Load()
	go func() {
		defer b.confirming.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.ConfirmTimeout)
		err := b.probe(withBypass(ctx))
		cancel()
		if err == nil || b.answers.Load() != seen {
			b.answers.Add(1)
			b.failures.Store(0)
			return
		}
		b.trip()
	}()
}

// deadlinePassed is whether ctx's deadline has passed. It reads the clock rather than ctx.Err(): go-redis sets the
// socket's deadline to ctx's, and the socket gives up a moment before ctx's own timer marks it done.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// isTimeout tells a call that ran out of time (its deadline, a socket deadline, or waiting for a pooled connection)
// from one that failed otherwise.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrPoolTimeout) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
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
		answers := h.b.answers.Load()
		err := next(ctx, cmd)
		if !spent {
			h.b.record(err, deadlinePassed(ctx), answers)
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
		answers := h.b.answers.Load()
		err := next(ctx, cmds)
		if !spent {
			h.b.record(err, deadlinePassed(ctx), answers)
		}
		return err
	}
}
