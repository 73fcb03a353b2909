package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/coalesce"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/testenv"
)

type result struct {
	r   reply
	err error
}

// newCall is one decision as a call of its own, outside the batcher's queue.
func (b *batcher) newCall(ctx context.Context, key string, m mode, limit int, windowSec int64, pending int, sentAt time.Time) *call {
	return coalesce.NewCall[*decision, reply](ctx, b.decision(key, m, limit, windowSec, pending, sentAt))
}

// runBatch sends calls as one batch, as the batcher does, and returns their results in order.
func runBatch(t *testing.T, b *batcher, calls []*call) []result {
	t.Helper()
	b.roundTrip(context.Background(), calls)
	out := make([]result, len(calls))
	for i, c := range calls {
		r, err := c.Answered()
		if errors.Is(err, coalesce.ErrNotAnswered) {
			t.Fatalf("call %d got no answer from its round trip", i)
		}
		out[i] = result{r, err}
	}
	return out
}

// One run decides every call of a batch in order: a bucket named twice sees its first decision's hit, a bucket that is
// not a sorted set fails its own decision alone, and the others are counted as if each had its own script.
func TestOneRunDecidesTheWholeBatch(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	if err := rdb.Set(ctx, "not-a-bucket", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	b := newBatcher(rdb, 0, nil)
	now := time.Now()
	calls := []*call{
		b.newCall(ctx, "a", modeAllow, 1, 60, 0, now),
		b.newCall(ctx, "not-a-bucket", modeAllow, 5, 60, 0, now),
		b.newCall(ctx, "a", modeAllow, 1, 60, 0, now), // over the limit of 1 after the first
		b.newCall(ctx, "b", modeAdd, 0, 60, 2, now),   // two held hits and this one
		b.newCall(ctx, "b", modeCheck, 3, 60, 0, now),
	}
	res := runBatch(t, b, calls)
	if r := res[0]; r.err != nil || !r.r.allowed || r.r.count != 1 || r.r.oldest != r.r.nowSec {
		t.Fatalf("first decision on a: %+v, %v; want allowed, count 1, oldest now", r.r, r.err)
	}
	if r := res[1]; !errors.Is(r.err, errDecisionFailed) {
		t.Fatalf("decision on a string key: %v, want errDecisionFailed", r.err)
	}
	if r := res[2]; r.err != nil || r.r.allowed || r.r.count != 1 {
		t.Fatalf("second decision on a: %+v, %v; want denied at count 1", r.r, r.err)
	}
	if r := res[3]; r.err != nil || !r.r.allowed || r.r.count != 3 {
		t.Fatalf("add on b: %+v, %v; want allowed at count 3", r.r, r.err)
	}
	if r := res[4]; r.err != nil || r.r.allowed || r.r.count != 3 {
		t.Fatalf("check on b at its limit of 3: %+v, %v; want not allowed", r.r, r.err)
	}
	for i, r := range res {
		if r.err == nil && (r.r.nowSec != res[0].r.nowSec || r.r.limit != calls[i].Req.r.limit || r.r.sentAt != now) {
			t.Fatalf("decision %d: %+v; want the run's one clock and its own limit and send time", i, r.r)
		}
	}
	if n := rdb.ZCard(ctx, "a").Val(); n != 1 {
		t.Fatalf("a holds %d entries, want 1", n)
	}
	if n := rdb.ZCard(ctx, "b").Val(); n != 3 {
		t.Fatalf("b holds %d entries, want 3", n)
	}
	if ttl := rdb.TTL(ctx, "b").Val(); ttl <= time.Minute || ttl > 2*time.Minute {
		t.Fatalf("b expires in %v, want twice the window", ttl)
	}
}

// A batch whose run Redis does not know (a restarted or flushed Redis) is sent again with the script's body, once.
func TestBatchReloadsTheScriptOnce(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b := newBatcher(rdb, 0, nil)
	calls := []*call{b.newCall(ctx, "k", modeAllow, 5, 60, 0, time.Now()), b.newCall(ctx, "k", modeAllow, 5, 60, 0, time.Now())}
	for i, r := range runBatch(t, b, calls) {
		if r.err != nil || !r.r.allowed || r.r.count != int64(i+1) {
			t.Fatalf("decision %d: %+v, %v; want allowed at count %d", i, r.r, r.err, i+1)
		}
	}
	if n := rdb.ZCard(ctx, "k").Val(); n != 2 {
		t.Fatalf("k holds %d entries, want 2 (each decision counted once)", n)
	}
}

// On a Cluster a script's keys must share a slot: a batch over buckets of every node is decided call by call, each counted,
// with the client the services use (redisclient's, which wraps go-redis's cluster client).
func TestBatchOnACluster(t *testing.T) {
	ctx := context.Background()
	cl := testenv.StartRedisCluster(t)
	c, err := redisclient.Open(redisclient.Options{Redis: config.Redis{Mode: config.RedisCluster, Addrs: cl.Addrs()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rdb := cl.Client()
	b := newBatcher(c, 0, nil)
	var calls []*call
	for i := range 30 {
		calls = append(calls, b.newCall(ctx, tokenKey(strconv.Itoa(i)), modeAllow, 10, 60, 1, time.Now()))
	}
	for i, r := range runBatch(t, b, calls) {
		if r.err != nil || !r.r.allowed || r.r.count != 2 {
			t.Fatalf("decision %d: %+v, %v; want allowed at count 2 (a held hit and this one)", i, r.r, r.err)
		}
	}
	for i := range 30 {
		if n := rdb.ZCard(ctx, tokenKey(strconv.Itoa(i))).Val(); n != 2 {
			t.Fatalf("bucket %d holds %d entries, want 2", i, n)
		}
	}
}
