package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// maxBatch bounds one run, so a burst cannot build a script that holds Redis, or a reply, long enough to stall every
	// caller in it.
	maxBatch = 128
	// maxSenders bounds runs in flight; a second one starts only when a full batch is already waiting.
	maxSenders = 4
)

// batcher coalesces limiter calls that arrive while a round trip is in flight into one run of the script. Callers wait
// for their own reply or their own ctx, never for each other.
type batcher struct {
	rdb     redis.UniversalClient
	cluster bool // a script's keys must share a slot: one call per run
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
	_, cluster := rdb.(*redis.ClusterClient)
	return &batcher{rdb: rdb, cluster: cluster, callTimeout: callTimeout, instance: hex.EncodeToString(b[:])}
}

// do runs the script for key; pending > 0 adds that many hits admitted earlier (fresh members) before deciding.
func (b *batcher) do(ctx context.Context, key string, m mode, limit int, windowSec int64, pending int, now func() time.Time) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, err
	}
	c := b.newCall(ctx, key, m, limit, windowSec, pending, now())
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

// newCall is one decision's part of a run: its bucket and its arguments in the script's order.
func (b *batcher) newCall(ctx context.Context, key string, m mode, limit int, windowSec int64, pending int, sentAt time.Time) *call {
	args := make([]any, 5, 5+pending)
	args[0], args[1], args[2], args[3], args[4] = limit, windowSec, string(m), b.member(), pending
	for range pending {
		args = append(args, b.member())
	}
	return &call{ctx: ctx, key: key, args: args, r: reply{limit: limit, windowSec: windowSec, sentAt: sentAt},
		done: make(chan result, 1)}
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

// roundTrip runs the script once for the whole batch: Redis parses one command, sets up the script once and reads its
// clock once (16 decisions in one run cost it a third less CPU each than 16 pipelined runs; docs/operations.md,
// "Capacity of one Redis shard"). On a Cluster a script's keys must share a slot, so there each call is its own run,
// pipelined. A run answered NOSCRIPT (a restarted or flushed Redis) is sent again with the script's body, which also
// reloads it: NOSCRIPT means the script did not run, so nothing is counted twice.
func (b *batcher) roundTrip(batch []*call) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	runs := [][]*call{batch}
	if b.cluster {
		runs = make([][]*call, len(batch))
		for i := range batch {
			runs[i] = batch[i : i+1]
		}
	}
	cmds := make([]*redis.IntSliceCmd, len(runs))
	for i, calls := range runs {
		cmds[i] = scriptCmd(ctx, false, calls)
	}
	b.exec(ctx, cmds)
	var reload []*redis.IntSliceCmd
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmds[i] = scriptCmd(ctx, true, runs[i])
			reload = append(reload, cmds[i])
		}
	}
	if len(reload) > 0 {
		b.exec(ctx, reload)
	}
	for i, calls := range runs {
		vals, err := cmds[i].Result()
		if err == nil && len(vals) != 3*len(calls)+2 {
			err = fmt.Errorf("ratelimit: the script answered %d values for %d decisions", len(vals), len(calls))
		}
		for j, c := range calls {
			if err != nil {
				c.done <- result{err: err}
				continue
			}
			d := vals[3*j : 3*j+3]
			if d[0] < 0 {
				c.done <- result{err: errDecisionFailed}
				continue
			}
			r := c.r
			r.allowed, r.count, r.oldest = d[0] == 1, d[1], d[2]
			r.nowSec, r.nowUsec = vals[len(vals)-2], vals[len(vals)-1]
			c.done <- result{r: r}
		}
	}
}

// exec sends cmds, pipelined when there are several; errors are per command.
func (b *batcher) exec(ctx context.Context, cmds []*redis.IntSliceCmd) {
	if len(cmds) == 1 {
		_ = b.rdb.Process(ctx, cmds[0])
		return
	}
	pipe := b.rdb.Pipeline()
	for _, cmd := range cmds {
		_ = pipe.Process(ctx, cmd)
	}
	_, _ = pipe.Exec(ctx)
}

// errDecisionFailed is a decision whose commands failed inside the script (its bucket holds something other than a
// sorted set); the other decisions of the run stand.
var errDecisionFailed = errors.New("ratelimit: the bucket's commands failed in Redis")

// scriptCmd is one run of the script over calls: EVALSHA, or EVAL with the body when withBody.
func scriptCmd(ctx context.Context, withBody bool, calls []*call) *redis.IntSliceCmd {
	n := 3 + len(calls)
	for _, c := range calls {
		n += len(c.args)
	}
	args := make([]any, 0, n)
	if withBody {
		args = append(args, "eval", slidingWindowSource, len(calls))
	} else {
		args = append(args, "evalsha", slidingWindow.Hash(), len(calls))
	}
	for _, c := range calls {
		args = append(args, c.key)
	}
	for _, c := range calls {
		args = append(args, c.args...)
	}
	return redis.NewIntSliceCmd(ctx, args...)
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
