package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/coalesce"
	"github.com/authgate/authgate/internal/redisclient"
)

// batcher sends limiter decisions that arrive while a round trip is in flight together, as one run of the script.
type batcher struct {
	rdb      redis.UniversalClient
	cluster  bool          // a script's keys must share a slot: one decision per run
	instance string        // random per process (64 bits), so members from different replicas or restarts never collide
	seq      atomic.Uint64 // per request, so members of one process never collide
	calls    *coalesce.Batcher[*decision, reply]
	sent     func(roundTrips int) // counts the round trips that ran the script
}

// decision is one call's part of a run: its bucket and its arguments in the script's order.
type decision struct {
	key  string
	args []any
	r    reply // limit, window and sentAt, filled in by the caller
}

type call = coalesce.Call[*decision, reply]

// newBatcher returns a batcher over rdb; callTimeout bounds each call when its context allows longer (0: the context
// alone).
func newBatcher(rdb redis.UniversalClient, callTimeout time.Duration, sent func(roundTrips int)) *batcher {
	var buf [8]byte
	_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails (Go 1.24+)
	if sent == nil {
		sent = func(int) {}
	}
	b := &batcher{rdb: rdb, cluster: redisclient.IsCluster(rdb), instance: hex.EncodeToString(buf[:]), sent: sent}
	b.calls = coalesce.New(b.roundTrip, coalesce.Options{CallTimeout: callTimeout})
	return b
}

// do runs the script for key; pending > 0 adds that many hits admitted earlier (fresh members) before deciding.
func (b *batcher) do(ctx context.Context, key string, m mode, limit int, windowSec int64, pending int, now func() time.Time) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, err
	}
	return b.calls.Do(ctx, b.decision(key, m, limit, windowSec, pending, now()))
}

// decision builds one decision's request.
func (b *batcher) decision(key string, m mode, limit int, windowSec int64, pending int, sentAt time.Time) *decision {
	args := make([]any, 5, 5+pending)
	args[0], args[1], args[2], args[3], args[4] = limit, windowSec, string(m), b.member(), pending
	for range pending {
		args = append(args, b.member())
	}
	return &decision{key: key, args: args, r: reply{limit: limit, windowSec: windowSec, sentAt: sentAt}}
}

// member is a fresh member: unique across replicas, restarts and requests.
func (b *batcher) member() string {
	var buf [40]byte
	m := append(append(buf[:0], b.instance...), '-')
	return string(strconv.AppendUint(m, b.seq.Add(1), 36))
}

// roundTrip runs the script once for the whole batch: Redis parses one command, sets up the script once and reads its
// clock once (16 decisions in one run cost it a third less CPU each than 16 pipelined runs; docs/operations.md,
// "Capacity of one Redis shard"). On a Cluster a script's keys must share a slot, so there each call is its own run,
// pipelined. A run answered NOSCRIPT (a restarted or flushed Redis) is sent again with the script's body, which also
// reloads it: NOSCRIPT means the script did not run, so nothing is counted twice.
func (b *batcher) roundTrip(ctx context.Context, batch []*call) {
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
	b.countSent(cmds)
	var reload []*redis.IntSliceCmd
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmds[i] = scriptCmd(ctx, true, runs[i])
			reload = append(reload, cmds[i])
		}
	}
	if len(reload) > 0 {
		b.exec(ctx, reload)
		b.countSent(reload)
	}
	for i, calls := range runs {
		vals, err := cmds[i].Result()
		if err == nil && len(vals) != 3*len(calls)+2 {
			err = fmt.Errorf("ratelimit: the script answered %d values for %d decisions", len(vals), len(calls))
		}
		for j, c := range calls {
			if err != nil {
				c.Answer(reply{}, err)
				continue
			}
			d := vals[3*j : 3*j+3]
			if d[0] < 0 {
				c.Answer(reply{}, errDecisionFailed)
				continue
			}
			r := c.Req.r
			r.allowed, r.count, r.oldest = d[0] == 1, d[1], d[2]
			r.nowSec, r.nowUsec = vals[len(vals)-2], vals[len(vals)-1]
			c.Answer(r, nil)
		}
	}
}

// countSent counts a round trip of cmds unless the health breaker kept it from Redis.
func (b *batcher) countSent(cmds []*redis.IntSliceCmd) {
	if !errors.Is(cmds[0].Err(), redisclient.ErrUnavailable) {
		b.sent(1)
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
		n += len(c.Req.args)
	}
	args := make([]any, 0, n)
	if withBody {
		args = append(args, "eval", slidingWindowSource, len(calls))
	} else {
		args = append(args, "evalsha", slidingWindow.Hash(), len(calls))
	}
	for _, c := range calls {
		args = append(args, c.Req.key)
	}
	for _, c := range calls {
		args = append(args, c.Req.args...)
	}
	return redis.NewIntSliceCmd(ctx, args...)
}
