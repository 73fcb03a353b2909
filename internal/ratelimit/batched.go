package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/redisclient"
)

// The batched mode (Options.Mode = Batched).
//
// Each replica keeps, per bucket, its view (the bucket's count in Redis as of its last reply, its own written hits
// included) and its hits not yet written: pending (waiting for the next write) and in flight (in a write not yet answered).
// It admits a request locally only when
//
//	view + held < limit − allowance   and   held < allowance        (held = pending + in flight)
//
// (a bucket it has not read yet counts as empty) and otherwise runs the script (the exact path), writing its held hits in
// the same script first. Every interval it writes the hits it holds, as one ZADD of fresh members per bucket scored with
// Redis's TIME, and reads the bucket's count back.
//
// Worst case, for one bucket in one window, with R replicas in batched mode and allowance A: at most limit + R·A
// admissions. Why: counts only fall by age, so consider a burst inside one window, and let τ be the first time the bucket
// holds limit − A entries or more. A request is admitted by the script only while the bucket is under the limit, so every
// admission beyond it is a local one written at or after τ. A replica never holds more than A hits; after τ it admits
// locally only until it applies the count of one of its own writes made at or after τ, which is at least limit − A and
// stops it; until then its held hits never exceed A, and a held hit leaves the count only by being written. So each
// replica writes at most A locally admitted hits at or after τ, and the bucket ends with at most limit + R·A entries. The
// bound is reached when every replica holds a whole allowance admitted on an old view while the bucket fills to the limit
// by other means (Dify, a replica's script). Dify's own admissions, and replicas in exact mode, add nothing to it.

const (
	// maxBucketsPerShard bounds the views kept (shardCount × this in all); beyond it a bucket goes by the exact path.
	maxBucketsPerShard = 16384
	// flushChunk bounds one write's pipeline.
	flushChunk = 512
	// sweepEvery flushes, views unused for two windows are dropped.
	sweepEvery = 100
)

type batched struct {
	sw        *SlidingWindow
	rdb       redis.UniversalClient
	interval  time.Duration
	allowance int
	now       func() time.Time

	shards [shardCount]bucketShard

	mu     sync.Mutex
	dirty  []*bucket // buckets holding pending hits
	closed atomic.Bool

	stop    chan struct{}
	stopped chan struct{}
	flushMu sync.Mutex // one write at a time: the ticker's or Close's
	flushes int
}

type bucketShard struct {
	mu sync.RWMutex
	m  map[string]*bucket
}

type bucket struct {
	key string

	mu           sync.Mutex
	known        bool
	view         int64
	resetAt      time.Time // local time the oldest counted entry leaves the window; zero when nothing is counted
	oldest       int64     // score of the oldest counted entry at the last reply that read it; -1: none counted
	oldestKnown  bool
	refreshed    time.Time // sentAt of the reply the view comes from
	readSec      int64     // Redis second in which the view's count was read
	pending      int
	inflight     int
	pendingSince time.Time
	windowSec    int64
	limit        int // of the last call: a write that finds the bucket at it makes a known denial
	dirty        bool
}

func newBatched(sw *SlidingWindow, rdb redis.UniversalClient, o Options) *batched {
	b := &batched{sw: sw, rdb: rdb, interval: o.BatchInterval, allowance: o.Allowance, now: o.Now,
		stop: make(chan struct{}), stopped: make(chan struct{})}
	for i := range b.shards {
		b.shards[i].m = map[string]*bucket{}
	}
	go b.run()
	return b
}

func (b *batched) allowanceFor(limit int, window time.Duration) int {
	if b.allowance > 0 {
		return b.allowance
	}
	return DefaultAllowance(limit, b.interval, window)
}

// get returns key's bucket, creating it unless the map is full (nil: go by the exact path).
func (b *batched) get(key string, shard int) *bucket {
	sh := &b.shards[shard]
	sh.mu.RLock()
	bk := sh.m[key]
	sh.mu.RUnlock()
	if bk != nil {
		return bk
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if bk = sh.m[key]; bk != nil {
		return bk
	}
	if len(sh.m) >= maxBucketsPerShard {
		return nil
	}
	bk = &bucket{key: key}
	sh.m[key] = bk
	return bk
}

// admit counts the request locally if the view leaves room for it (see above); ok false means the script must decide.
func (b *batched) admit(key string, shard, limit int, window time.Duration, now time.Time) (Decision, bool) {
	if b.closed.Load() {
		return Decision{}, false
	}
	bk := b.get(key, shard)
	if bk == nil {
		return Decision{}, false
	}
	a := b.allowanceFor(limit, window)
	bk.mu.Lock()
	held := bk.pending + bk.inflight
	// A bucket this replica has not read yet, or not for a whole window (whatever it counted then has left), is taken as
	// empty: the allowance still bounds what it admits before its first write tells it the count.
	view := bk.view
	if !bk.known || now.Sub(bk.refreshed) >= window {
		view = 0
	}
	if held >= a || view+int64(held) >= int64(limit-a) {
		bk.mu.Unlock()
		return Decision{}, false
	}
	bk.pending++
	bk.windowSec, bk.limit = windowSeconds(window), limit
	if bk.pending == 1 {
		bk.pendingSince = now
	}
	mark := !bk.dirty
	bk.dirty = true
	d := Decision{Allowed: true, Limit: limit, Remaining: max(limit-int(view)-held-1, 0), Local: true, Reset: window}
	if bk.resetAt.After(now) {
		d.Reset = bk.resetAt.Sub(now)
	}
	bk.mu.Unlock()
	if mark {
		b.mu.Lock()
		b.dirty = append(b.dirty, bk)
		b.mu.Unlock()
	}
	b.sw.stats.localAdmissions.Add(1)
	return d, true
}

// allowExact decides with the script, writing the hits this replica holds for the bucket first, and refreshes the view.
func (b *batched) allowExact(ctx context.Context, key string, limit int, window time.Duration) (Decision, error) {
	bk := b.get(key, shardOf(key))
	if bk == nil {
		return b.sw.do(ctx, key, modeAllow, limit, window, 0)
	}
	bk.mu.Lock()
	p := bk.pending
	bk.pending -= p
	bk.inflight += p
	bk.windowSec, bk.limit = windowSeconds(window), limit
	bk.mu.Unlock()

	r, err := b.sw.batch.do(ctx, key, modeAllow, limit, windowSeconds(window), p, b.now)
	bk.mu.Lock()
	bk.inflight -= p
	if err != nil {
		b.giveBack(bk, p)
		bk.mu.Unlock()
		return Decision{}, err
	}
	bk.apply(r.nowSec, true, r.count, r.oldest, r.nowSec, r.nowUsec, r.sentAt)
	bk.mu.Unlock()
	b.sw.stats.redisDecisions.Add(1)
	b.sw.remember(key, r)
	return r.decision(), nil
}

// giveBack returns hits a failed write carried to pending, for the next write; the caller holds bk.mu.
func (b *batched) giveBack(bk *bucket, p int) {
	if p == 0 {
		return
	}
	if bk.pending == 0 {
		bk.pendingSince = b.now()
	}
	bk.pending += p
	if !bk.dirty {
		bk.dirty = true
		b.mu.Lock()
		b.dirty = append(b.dirty, bk)
		b.mu.Unlock()
	}
}

// apply refreshes the view from a count read in Redis second readSec (or, when !exact, in that second or a little later);
// the caller holds bk.mu.
//
// Replies do not arrive in the order Redis ran their commands (the script and the writes use different connections), and
// a count read before one of this replica's writes landed must not replace a count that includes it: those hits are no
// longer held, so the view would miss them. Within one Redis second a bucket's count only grows (entries are scored in
// whole seconds and leave the window only when the second changes), so a count from the same second is merged with max,
// a count from a later second replaces the view, one from an earlier second is dropped, and one whose second is not known
// exactly is only ever merged with max.
func (bk *bucket) apply(readSec int64, exact bool, count, oldest, nowSec, nowUsec int64, sentAt time.Time) {
	switch {
	case !bk.known || (exact && readSec > bk.readSec):
		bk.view = count
		bk.readSec = readSec
	case exact && readSec < bk.readSec:
		return
	default:
		bk.view = max(bk.view, count)
	}
	bk.known = true
	bk.refreshed = sentAt
	if oldest == oldestNotRead {
		return // a write that left the oldest entry where it was
	}
	bk.oldest, bk.oldestKnown = oldest, true
	bk.resetAt = time.Time{}
	if oldest >= 0 {
		bk.resetAt = sentAt.Add(reset(oldest, bk.windowSec, nowSec, nowUsec))
	}
}

// oldestNotRead marks a reply that did not read the oldest entry.
const oldestNotRead = -2

func (b *batched) run() {
	defer close(b.stopped)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(2*b.interval, time.Second))
			_ = b.flush(ctx)
			cancel()
		}
	}
}

// close stops admitting locally and the ticker, then writes what is held.
func (b *batched) close(ctx context.Context) error {
	if !b.closed.Swap(true) {
		close(b.stop)
	}
	select {
	case <-b.stopped:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.flush(ctx)
}

// flushing is one bucket's part of a write.
type flushing struct {
	bk      *bucket
	hits    int
	ws      int64 // the bucket's window in seconds, read under its lock
	oldest  int64 // the bucket's oldest entry as last read; oldestNotRead if not known
	zadd    *redis.IntCmd
	zcard   *redis.IntCmd
	zoldest *redis.ZSliceCmd
}

// flush writes every bucket's pending hits: one TIME, then per bucket ZADD, EXPIRE and ZCARD, pipelined (plain commands
// cost Redis a fraction of a script, and a write needs no atomicity: the count read back after the ZADD includes everything
// written before it, which is what the bound above needs). Entries out of the window are removed, and the oldest entry
// read, only when the bucket's oldest entry as last read has left the window or is not known: otherwise the removal would
// find nothing and the oldest is unchanged.
func (b *batched) flush(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	list := b.dirty
	b.dirty = nil
	b.mu.Unlock()
	b.flushes++
	if b.flushes%sweepEvery == 0 {
		b.sweep()
	}
	now := b.now()
	var work []flushing
	for _, bk := range list {
		bk.mu.Lock()
		bk.dirty = false
		p := bk.pending
		if p > 0 && now.Sub(bk.pendingSince) >= time.Duration(bk.windowSec)*time.Second {
			p, bk.pending = 0, 0 // held past a whole window (Redis unreachable): they no longer count
		}
		if p > 0 {
			bk.pending = 0
			bk.inflight += p
			f := flushing{bk: bk, hits: p, ws: bk.windowSec, oldest: oldestNotRead}
			if bk.oldestKnown {
				f.oldest = bk.oldest
			}
			work = append(work, f)
		}
		bk.mu.Unlock()
	}
	if len(work) == 0 {
		return nil
	}
	var firstErr error
	for start := 0; start < len(work); start += flushChunk {
		if err := b.write(ctx, work[start:min(start+flushChunk, len(work))]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (b *batched) write(ctx context.Context, work []flushing) error {
	sentAt := b.now()
	t, err := b.rdb.Time(ctx).Result()
	var trips int64
	if !errors.Is(err, redisclient.ErrUnavailable) { // the breaker kept nothing from Redis
		trips++
	}
	if err == nil {
		trips++ // the write follows the clock read
		nowSec := t.Unix()
		pipe := b.rdb.Pipeline()
		for i := range work {
			f := &work[i]
			key, ws := f.bk.key, f.ws
			full := f.oldest < 0 || f.oldest <= nowSec-ws
			if full {
				pipe.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(nowSec-ws, 10))
			}
			members := make([]redis.Z, f.hits)
			for j := range members {
				members[j] = redis.Z{Score: float64(nowSec), Member: b.sw.batch.member()}
			}
			f.zadd = pipe.ZAdd(ctx, key, members...)
			pipe.Expire(ctx, key, time.Duration(2*ws)*time.Second)
			f.zcard = pipe.ZCard(ctx, key)
			if full {
				f.zoldest = pipe.ZRangeWithScores(ctx, key, 0, 0)
			}
		}
		_, err = pipe.Exec(ctx)
	}
	b.sw.stats.flushes.Add(1)
	if trips > 0 {
		b.sw.trips.Add(context.WithoutCancel(ctx), trips, tripWrite)
	}
	if err != nil {
		b.sw.stats.flushErrors.Add(1)
	}
	nowSec, nowUsec := t.Unix(), int64(t.Nanosecond()/1000)
	// The counts were read after TIME ran and before the reply came back: still in TIME's second if that much time was
	// left of it.
	sameSecond := time.Duration(nowUsec)*time.Microsecond+b.now().Sub(sentAt) < time.Second
	for i := range work {
		f := &work[i]
		// Hits whose ZADD may not have run are held again: counting a hit twice after a failed write errs on the safe side.
		written := f.zadd != nil && f.zadd.Err() == nil
		var r reply
		f.bk.mu.Lock()
		f.bk.inflight -= f.hits
		if !written {
			b.giveBack(f.bk, f.hits)
		} else {
			b.sw.stats.flushedHits.Add(int64(f.hits))
			if f.zcard.Err() == nil && (f.zoldest == nil || f.zoldest.Err() == nil) {
				r = reply{count: f.zcard.Val(), oldest: oldestNotRead, nowSec: nowSec, nowUsec: nowUsec, sentAt: sentAt,
					limit: f.bk.limit, windowSec: f.bk.windowSec}
				if f.zoldest != nil {
					r.oldest = -1
					if z := f.zoldest.Val(); len(z) > 0 {
						r.oldest = int64(z[0].Score)
					}
				}
				f.bk.apply(nowSec, sameSecond, r.count, r.oldest, nowSec, nowUsec, sentAt)
			}
		}
		f.bk.mu.Unlock()
		// A known denial needs the oldest entry as Redis holds it now.
		if r.limit > 0 && r.oldest != oldestNotRead {
			b.sw.remember(f.bk.key, r)
		}
	}
	return err
}

// sweep drops views nobody used for two windows and that hold nothing.
func (b *batched) sweep() {
	now := b.now()
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for k, bk := range sh.m {
			bk.mu.Lock()
			idle := bk.pending == 0 && bk.inflight == 0 && !bk.dirty &&
				now.Sub(bk.refreshed) >= 2*time.Duration(max(bk.windowSec, 1))*time.Second
			bk.mu.Unlock()
			if idle {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}
