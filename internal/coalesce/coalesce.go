// Package coalesce sends the calls that arrive while a round trip is in flight together, in the next round trip: for
// many concurrent callers what a pipeline is for one. A round trip's fixed cost (system calls on both ends, a wake-up of
// each process, the server's parsing) is then paid once per batch instead of once per call; under load batches grow by
// themselves, and an idle caller pays no delay, since a lone call goes out at once. Callers wait for their own answer,
// their own context or their own bound, never for each other.
//
// A sender whose round trip returns with calls already waiting (the process is busy) first lets other goroutines run,
// for as long as that brings new calls and a few times at most: callers that are runnable, a moment away from calling,
// then join this round trip instead of starting the next, which turns several round trips of a few calls into one of
// many. The price is the wait: behind goroutines that run without blocking a yield can last a scheduler time slice, so
// the yields are bounded by a count and never made by an idle or new sender, whose lone call goes out at once. A timer
// would not do: waiting while no caller is runnable only leaves the processor idle (docs/benchmarks.md).
//
// A call that need not go out at once (a write nobody waits for, such as a cache fill) is made with DoWithin: it rides the
// next round trip another call starts and goes out on its own only if none starts within its wait, so under load it costs
// no round trip of its own.
package coalesce

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// Options configure New.
type Options struct {
	// CallTimeout bounds each call when its context allows longer (0: the context alone), so a caller need not build a
	// context per call: it waits with a pooled timer.
	CallTimeout time.Duration
	// MaxBatch bounds one round trip (default 128), so a burst cannot build a request or a reply large enough to stall
	// every caller in it.
	MaxBatch int
	// MaxSenders bounds round trips in flight (default 4); a second one starts only when a full batch is already waiting.
	MaxSenders int
}

// Call is one caller's request in a batch.
type Call[Req, Resp any] struct {
	Req      Req
	ctx      context.Context
	deadline time.Time         // the earlier of ctx's and CallTimeout's; zero: none
	done     chan answer[Resp] // buffered: a round trip never blocks on a caller that gave up
	answered bool              // touched only by the round trip's goroutine
	rider    bool              // made with DoWithin: does not start a round trip by itself until its wait is over
}

type answer[Resp any] struct {
	resp Resp
	err  error
}

// NewCall is a call outside any Batcher, for a round trip run directly (tests); its answer is read with Answered.
func NewCall[Req, Resp any](ctx context.Context, req Req) *Call[Req, Resp] {
	return &Call[Req, Resp]{Req: req, ctx: ctx, done: make(chan answer[Resp], 1)}
}

// Answer gives the call its outcome. A round trip answers each of its calls once; later answers are dropped.
func (c *Call[Req, Resp]) Answer(resp Resp, err error) {
	if c.answered {
		return
	}
	c.answered = true
	c.done <- answer[Resp]{resp, err}
}

// Answered returns the call's outcome without waiting: ErrNotAnswered if it has none yet.
func (c *Call[Req, Resp]) Answered() (Resp, error) {
	select {
	case a := <-c.done:
		return a.resp, a.err
	default:
		var zero Resp
		return zero, ErrNotAnswered
	}
}

// ErrNotAnswered is the outcome of a call its round trip did not answer (a bug in the round trip), and what Answered
// returns before the answer.
var ErrNotAnswered = errors.New("coalesce: the round trip gave no answer for this call")

// maxYields bounds the yields before one batch: a count, not a time, since each lasts as long as the goroutines that run
// in the meantime.
const maxYields = 4

// senderIdle is how long a sender with nothing to send waits for more before it exits. A sender that stays is woken
// instead of started: a new goroutine per round trip grew its stack anew each time (runtime.newstack was a sixth of a
// cold Check's CPU at 1,000 Checks/s).
const senderIdle = 10 * time.Second

// Batcher coalesces calls into round trips. It needs no Close: round trips are sent by goroutines that exit after
// senderIdle without work.
type Batcher[Req, Resp any] struct {
	roundTrip            func(ctx context.Context, calls []*Call[Req, Resp])
	callTimeout          time.Duration
	maxBatch, maxSenders int
	wake                 chan struct{} // a token for an idle sender: there is work
	yield                func()        // runtime.Gosched; tests replace it

	mu      sync.Mutex
	queue   []*Call[Req, Resp]
	senders int // sending or idle
	idle    int // waiting for work
	// eager counts the queued calls that want a round trip now (made with Do); with none, the queue goes out only once
	// riderDue: the wait of a rider queued then has passed (riderTimer fired), or calls were left behind a full batch;
	// it holds until the queue is empty.
	eager      int
	riderDue   bool
	riderTimer *time.Timer // armed for the earliest end of a queued rider's wait
	timerArmed bool
	timerAt    time.Time // when riderTimer fires, while armed
}

// New returns a Batcher whose round trips are roundTrip: it must Answer every call it is given, and its ctx lives as
// long as the most patient caller in the batch (one caller's cancellation must not fail the others).
func New[Req, Resp any](roundTrip func(ctx context.Context, calls []*Call[Req, Resp]), o Options) *Batcher[Req, Resp] {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 128
	}
	if o.MaxSenders <= 0 {
		o.MaxSenders = 4
	}
	return &Batcher[Req, Resp]{roundTrip: roundTrip, callTimeout: o.CallTimeout, maxBatch: o.MaxBatch,
		maxSenders: o.MaxSenders, wake: make(chan struct{}, 1), yield: runtime.Gosched}
}

// Do sends req in the next round trip and waits for its answer, ctx or the call timeout, whichever comes first.
func (b *Batcher[Req, Resp]) Do(ctx context.Context, req Req) (Resp, error) {
	return b.do(ctx, req, 0)
}

// DoWithin is Do for a call that may wait up to wait for company: it goes out with the next round trip a call made with
// Do starts, or in one of its own once wait has passed (or sooner, with a rider whose wait ends earlier). It waits for
// its answer as Do does.
func (b *Batcher[Req, Resp]) DoWithin(ctx context.Context, req Req, wait time.Duration) (Resp, error) {
	return b.do(ctx, req, max(wait, time.Nanosecond))
}

// do queues req, a rider when wait > 0, and waits for its answer.
func (b *Batcher[Req, Resp]) do(ctx context.Context, req Req, wait time.Duration) (Resp, error) {
	var zero Resp
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := NewCall[Req, Resp](ctx, req)
	var expired <-chan time.Time
	if b.callTimeout > 0 {
		c.deadline = time.Now().Add(b.callTimeout)
		if dl, ok := ctx.Deadline(); !ok || c.deadline.Before(dl) {
			bound := timers.Get().(*time.Timer)
			bound.Reset(b.callTimeout)
			defer func() {
				bound.Stop()
				timers.Put(bound)
			}()
			expired = bound.C
		} else {
			c.deadline = dl
		}
	} else if dl, ok := ctx.Deadline(); ok {
		c.deadline = dl
	}
	c.rider = wait > 0
	b.mu.Lock()
	b.queue = append(b.queue, c)
	switch {
	case c.rider && !b.riderDue && len(b.queue) < b.maxBatch:
		if at := time.Now().Add(wait); !b.timerArmed || at.Before(b.timerAt) {
			b.timerArmed, b.timerAt = true, at
			if b.riderTimer == nil {
				b.riderTimer = time.AfterFunc(wait, b.ridersDue)
			} else {
				b.riderTimer.Reset(wait)
			}
		}
	default:
		if !c.rider {
			b.eager++
		}
		b.kick()
	}
	b.mu.Unlock()
	select {
	case a := <-c.done:
		return a.resp, a.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-expired:
		return zero, context.DeadlineExceeded
	}
}

// Waiting is how many calls wait for a round trip.
func (b *Batcher[Req, Resp]) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// kick gets a sender to the queue: an idle one woken, or a new one started when there is none (or a full batch is waiting
// and fewer than maxSenders are sending). The caller holds mu.
func (b *Batcher[Req, Resp]) kick() {
	switch {
	case b.idle > 0:
		select {
		case b.wake <- struct{}{}:
		default: // a token is already waiting
		}
	case b.senders == 0 || (len(b.queue) >= b.maxBatch && b.senders < b.maxSenders):
		b.senders++
		go b.send()
	}
}

// ridersDue runs when the wait of the riders queued has passed: whatever is queued goes out now.
func (b *Batcher[Req, Resp]) ridersDue() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timerArmed = false
	if len(b.queue) > 0 {
		b.riderDue = true
		b.kick()
	}
}

// ready reports whether the queue should go out now: an eager call, riders whose wait has passed, or a full batch. The
// caller holds mu.
func (b *Batcher[Req, Resp]) ready() bool {
	return len(b.queue) > 0 && (b.eager > 0 || b.riderDue || len(b.queue) >= b.maxBatch)
}

// timers are stopped timers for callers' waits: a context per call (its timer, its registration with the parent, its
// cancellation) was a measurable share of a Check.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// send drains the queue one round trip at a time; with the queue empty it waits for work, and exits after senderIdle
// without any.
func (b *Batcher[Req, Resp]) send() {
	var idle *time.Timer
	busy := false // the last round trip returned with calls waiting
	for {
		b.mu.Lock()
		if !b.ready() {
			busy = false
			b.idle++
			b.mu.Unlock()
			if idle == nil {
				idle = time.NewTimer(senderIdle)
			} else {
				idle.Reset(senderIdle)
			}
			var expired bool
			select {
			case <-b.wake:
			case <-idle.C:
				expired = true
			}
			b.mu.Lock()
			b.idle--
			if expired && !b.ready() {
				b.senders--
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
			continue
		}
		for i := 0; busy && i < maxYields; i++ {
			waiting := len(b.queue)
			if waiting >= b.maxBatch {
				break
			}
			b.mu.Unlock()
			b.yield()
			b.mu.Lock()
			if len(b.queue) <= waiting { // nobody joined (or another sender took the queue)
				break
			}
		}
		busy = true
		n := min(len(b.queue), b.maxBatch)
		batch := make([]*Call[Req, Resp], 0, n)
		now := time.Now()
		for _, c := range b.queue[:n] {
			if !c.rider {
				b.eager--
			}
			// A caller that has gone (cancelled, or past its deadline) is left out: nobody would read its answer, and a
			// request whose caller has given up must not take effect (a limiter hit nobody was admitted for).
			if c.ctx.Err() == nil && (c.deadline.IsZero() || now.Before(c.deadline)) {
				batch = append(batch, c)
			}
		}
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		// Calls left behind a full batch go out next, riders among them: they were ready to go with this one.
		b.riderDue = rest > 0
		b.mu.Unlock()
		if len(batch) > 0 {
			b.run(batch)
		}
	}
}

// run sends one batch. A round trip that panics fails its calls with the panic and its stack as their error (which the
// callers log) instead of taking the process down or leaving this sender dead with every later call queued behind it.
func (b *Batcher[Req, Resp]) run(batch []*Call[Req, Resp]) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	var zero Resp
	defer func() {
		err := ErrNotAnswered
		if r := recover(); r != nil {
			err = fmt.Errorf("coalesce: the round trip panicked: %v\n%s", r, debug.Stack())
		}
		for _, c := range batch {
			c.Answer(zero, err)
		}
	}()
	b.roundTrip(ctx, batch)
}

// batchContext lives as long as the most patient caller in the batch: one caller's cancellation must not fail the others,
// and once every caller has a deadline there is no point in waiting past the last one.
func batchContext[Req, Resp any](batch []*Call[Req, Resp]) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		if c.deadline.IsZero() {
			return context.WithCancel(context.Background())
		}
		if c.deadline.After(latest) {
			latest = c.deadline
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
