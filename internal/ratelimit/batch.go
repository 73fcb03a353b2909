package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// maxBatch bounds one pipeline, so a burst cannot build a reply large enough to stall every caller in it.
	maxBatch = 128
	// maxSenders bounds pipelines in flight; a second one starts only when a full batch is already waiting.
	maxSenders = 4
)

// batcher coalesces limiter calls that arrive while a round trip is in flight into one pipeline of EVALSHAs. Callers wait
// for their own reply or their own ctx, never for each other.
type batcher struct {
	rdb redis.UniversalClient
	// callTimeout bounds each call when its context allows longer (0: the context alone), so a caller need not build a
	// context per call: it waits with a pooled timer.
	callTimeout time.Duration
	instance    string        // random per process (64 bits), so members from different replicas or restarts never collide
	seq         atomic.Uint64 // per request, so members of one process never collide

	mu      sync.Mutex
	queue   []*call
	senders int
}

type call struct {
	ctx      context.Context
	key      string
	args     []any
	r        reply       // limit, window and sentAt, filled in by the caller
	deadline time.Time   // the earlier of ctx's and callTimeout's; zero: none
	done     chan result // buffered: the sender never blocks on a caller that gave up
}

type result struct {
	r   reply
	err error
}

func newBatcher(rdb redis.UniversalClient, callTimeout time.Duration) *batcher {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return &batcher{rdb: rdb, callTimeout: callTimeout, instance: hex.EncodeToString(b[:])}
}

// do runs the script for key; pending > 0 adds that many hits admitted earlier (fresh members) before deciding.
func (b *batcher) do(ctx context.Context, key string, m mode, limit int, windowSec int64, pending int, now func() time.Time) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, err
	}
	args := make([]any, 4, 4+pending)
	args[0], args[1], args[2], args[3] = limit, windowSec, string(m), b.member()
	for range pending {
		args = append(args, b.member())
	}
	c := &call{ctx: ctx, key: key, args: args, r: reply{limit: limit, windowSec: windowSec, sentAt: now()},
		done: make(chan result, 1)}
	var wait *time.Timer
	if b.callTimeout > 0 {
		start := time.Now()
		c.deadline = start.Add(b.callTimeout)
		if dl, ok := ctx.Deadline(); !ok || c.deadline.Before(dl) {
			wait = timers.Get().(*time.Timer)
			wait.Reset(b.callTimeout)
			defer func() {
				wait.Stop()
				timers.Put(wait)
			}()
		} else {
			c.deadline = dl
		}
	} else if dl, ok := ctx.Deadline(); ok {
		c.deadline = dl
	}
	var expired <-chan time.Time
	if wait != nil {
		expired = wait.C
	}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.senders == 0 || (len(b.queue) >= maxBatch && b.senders < maxSenders) {
		b.senders++
		go b.send()
	}
	b.mu.Unlock()
	select {
	case r := <-c.done:
		return r.r, r.err
	case <-ctx.Done():
		return reply{}, ctx.Err()
	case <-expired:
		return reply{}, context.DeadlineExceeded
	}
}

// timers are stopped timers for callers' waits: a context per call (its timer, its registration with the parent, its
// cancellation) was a measurable share of a Check.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// member is a fresh member: unique across replicas, restarts and requests.
func (b *batcher) member() string {
	var buf [40]byte
	m := append(append(buf[:0], b.instance...), '-')
	return string(strconv.AppendUint(m, b.seq.Add(1), 36))
}

// send drains the queue one pipeline at a time and exits when it is empty.
func (b *batcher) send() {
	for {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.senders--
			b.mu.Unlock()
			return
		}
		n := min(len(b.queue), maxBatch)
		batch := make([]*call, 0, n)
		for _, c := range b.queue[:n] {
			// A caller that has gone (cancelled, or past its deadline) is not counted: nobody will send its request.
			if c.ctx.Err() == nil && (c.deadline.IsZero() || time.Now().Before(c.deadline)) {
				batch = append(batch, c)
			}
		}
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		if len(batch) > 0 {
			b.roundTrip(batch)
		}
	}
}

// roundTrip sends one EVALSHA per call in one pipeline; calls answered NOSCRIPT (a restarted or flushed Redis) are sent
// again with the script's body, which also reloads it. NOSCRIPT means the script did not run, so nothing is counted twice.
func (b *batcher) roundTrip(batch []*call) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	cmds := make([]*redis.Cmd, len(batch))
	pipe := b.rdb.Pipeline()
	for i, c := range batch {
		cmds[i] = slidingWindow.EvalSha(ctx, pipe, []string{c.key}, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command

	var retry []int
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe := b.rdb.Pipeline()
		for _, i := range retry {
			cmds[i] = slidingWindow.Eval(ctx, pipe, []string{batch[i].key}, batch[i].args...)
		}
		_, _ = pipe.Exec(ctx)
	}

	for i, c := range batch {
		raw, err := cmds[i].Result()
		if err != nil {
			c.done <- result{err: err}
			continue
		}
		r, err := parseReply(raw)
		r.limit, r.windowSec, r.sentAt = c.r.limit, c.r.windowSec, c.r.sentAt
		c.done <- result{r: r, err: err}
	}
}

// batchContext lives as long as the most patient caller in the batch: one caller's cancellation must not fail the others,
// and once every caller has a deadline there is no point in waiting past the last one.
func batchContext(batch []*call) (context.Context, context.CancelFunc) {
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
