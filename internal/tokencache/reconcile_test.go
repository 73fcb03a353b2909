package tokencache

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// fakeLog is a RevocationLog the test writes to directly, standing for Postgres's revocation records.
type fakeLog struct {
	mu    sync.Mutex
	list  []tokens.RevokedHash
	err   error
	calls int
}

func (l *fakeLog) RevokedSince(ctx context.Context, since time.Time) ([]tokens.RevokedHash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.err != nil {
		return nil, l.err
	}
	var out []tokens.RevokedHash
	for _, r := range l.list {
		if !r.RevokedAt.Before(since) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (l *fakeLog) revoke(hash string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, tokens.RevokedHash{Hash: hash, TokenID: accountEntry().TokenID, RevokedAt: at,
		Reason: tokens.ReasonRevoked})
}

func (l *fakeLog) setErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

func (l *fakeLog) callCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// runReconciler starts r.Run for the test.
func runReconciler(t *testing.T, r *Reconciler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler Run: %v", err)
		}
	})
}

func logTo(buf *testenv.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestReconcilerDeniesWhatRedisStillServes: a revocation that reached Postgres but never Redis (no tombstone, no event) is
// refused by both layers within a tick, and the reconciler writes its tombstone for Dify and the other readers.
func TestReconcilerDeniesWhatRedisStillServes(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	h, other := newHash(), newHash()
	for _, x := range []string{h, other} {
		if err := c.Fill(ctx, x, accountEntry()); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := c.Local(h); !ok {
		t.Fatal("the entry is not in the local layer")
	}
	log := &fakeLog{}
	runReconciler(t, NewReconciler(c, log, ReconcilerOptions{}))
	log.revoke(h, time.Now())

	testenv.Eventually(t, time.Second, "the revoked hash denied", func() bool {
		_, st, err := c.Get(ctx, h)
		return err == nil && st == Invalid
	})
	if _, ok := c.Local(h); ok {
		t.Fatal("Local still serves the revoked hash")
	}
	if c.local.entries.Contains(h) {
		t.Fatal("the revoked hash was not evicted from the local layer")
	}
	testenv.Eventually(t, time.Second, "the tombstone written", func() bool {
		return rdb.Get(ctx, redisKey(h)).Val() == tombstone
	})
	// TTL: what is left of the cache TTL + margin (+ the clock allowance), never more.
	if ttl := rdb.PTTL(ctx, redisKey(h)).Val(); ttl <= time.Minute || ttl > time.Minute+tombstoneMargin+revocationClockSkew {
		t.Fatalf("tombstone TTL %v", ttl)
	}
	// A positive fill cannot bring it back, in Redis or in process.
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	if _, st, _ := c.Get(ctx, h); st != Invalid {
		t.Fatalf("after a fill: %v", st)
	}
	if got, st, err := c.Get(ctx, other); err != nil || st != Hit || got.TokenID != accountEntry().TokenID {
		t.Fatalf("an unrelated token: %+v, %v, %v", got, st, err)
	}
}

// TestReconcilerDeniesWhileRedisHangs: with Redis hung, the revocation is refused without Redis (Get does not wait on it);
// the tombstone is written once Redis answers again, and the outage costs one warning, not one per tick.
func TestReconcilerDeniesWhileRedisHangs(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	rdb, err := redisclient.Open(redisclient.Options{URL: srv.URL(), CallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	c := New(rdb, Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	log := &fakeLog{}
	runReconciler(t, NewReconciler(c, log, ReconcilerOptions{Logger: logTo(logs)}))

	srv.Pause()
	t.Cleanup(srv.Resume)
	log.revoke(h, time.Now())
	testenv.Eventually(t, 2*time.Second, "the revoked hash denied while Redis hangs", func() bool {
		gctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, st, err := c.Get(gctx, h)
		return err == nil && st == Invalid
	})
	// Several ticks of failed writes.
	ticks := log.callCount()
	testenv.Eventually(t, 5*time.Second, "several reconcile ticks during the hang", func() bool {
		return log.callCount() >= ticks+5
	})
	if n := logs.Count("cannot write revocation tombstones"); n != 1 {
		t.Fatalf("%d warnings for one outage, want 1 (throttled):\n%s", n, logs.String())
	}

	srv.Resume()
	testenv.Eventually(t, 5*time.Second, "the tombstone written after the resume", func() bool {
		v, err := srv.Client().Get(ctx, redisKey(h)).Result()
		return err == nil && v == tombstone
	})
	testenv.Eventually(t, time.Second, "the recovery logged", func() bool {
		return logs.Count("revocation tombstones written after Redis recovered") == 1
	})
	if _, st, err := c.Get(ctx, h); err != nil || st != Invalid {
		t.Fatalf("after the resume: %v, %v", st, err)
	}
}

// TestReconcilerIsCheapWhenNothingChanges: one read of the records per tick, and no Redis command once the known tombstones
// are written.
func TestReconcilerIsCheapWhenNothingChanges(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	rdb := srv.Client()
	c := New(rdb, Options{TTL: time.Minute})
	log := &fakeLog{}
	log.revoke(newHash(), time.Now())
	r := NewReconciler(c, log, ReconcilerOptions{})
	r.reconcile(ctx)
	if log.callCount() != 1 {
		t.Fatalf("%d reads in one tick", log.callCount())
	}
	before := commandCount(t, rdb)
	for range 10 {
		r.reconcile(ctx)
	}
	if log.callCount() != 11 {
		t.Fatalf("%d reads in 11 ticks, want 11", log.callCount())
	}
	if after := commandCount(t, rdb); after != before+1 { // +1: the INFO of the first count
		t.Fatalf("Redis commands during idle ticks: %d, want none", after-before-1)
	}
}

// commandCount is the number of commands Redis has processed.
func commandCount(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			var n int
			for _, d := range v {
				n = n*10 + int(d-'0')
			}
			return n
		}
	}
	t.Fatal("no total_commands_processed in INFO")
	return 0
}

// TestReconcilerKeepsUnwrittenHashesPastTheWindow: a written hash is forgotten once no cache can hold it any more; one whose
// tombstone never got written stays denied (a fill sent into a hung Redis may land when it resumes) until it is written.
func TestReconcilerKeepsUnwrittenHashesPastTheWindow(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	rdb := srv.Client()
	c := New(rdb, Options{TTL: time.Minute})
	log := &fakeLog{}
	r := NewReconciler(c, log, ReconcilerOptions{Logger: logTo(&testenv.LogBuffer{})})
	clock := time.Now()
	r.now = func() time.Time { return clock }
	written, stuck := newHash(), newHash()
	log.revoke(written, clock)
	r.reconcile(ctx)
	srv.Stop()
	log.revoke(stuck, clock)
	r.reconcile(ctx)
	if !c.isDenied(written) || !c.isDenied(stuck) {
		t.Fatal("revocations not denied")
	}

	clock = clock.Add(r.window + time.Second)
	r.reconcile(ctx)
	if c.isDenied(written) {
		t.Fatal("a written hash is still denied past the window")
	}
	if !c.isDenied(stuck) {
		t.Fatal("a hash whose tombstone was never written was forgotten")
	}
	srv.Start()
	r.reconcile(ctx)
	if v, err := rdb.Get(ctx, redisKey(stuck)).Result(); err != nil || v != tombstone {
		t.Fatalf("late tombstone: %q, %v", v, err)
	}
	if ttl := rdb.PTTL(ctx, redisKey(stuck)).Val(); ttl <= 0 || ttl > tombstoneMargin {
		t.Fatalf("late tombstone TTL %v, want the margin", ttl)
	}
	r.reconcile(ctx)
	if c.isDenied(stuck) {
		t.Fatal("still denied after its tombstone was written past the window")
	}
}

// TestReconcilerReadErrorsAreThrottledAndKeepTheDenials: while Postgres cannot be read, what is known stays denied and the
// failure is logged once per interval, not per tick.
func TestReconcilerReadErrorsAreThrottledAndKeepTheDenials(t *testing.T) {
	ctx := context.Background()
	c := New(testenv.Redis(t), Options{TTL: time.Minute})
	log := &fakeLog{}
	logs := &testenv.LogBuffer{}
	r := NewReconciler(c, log, ReconcilerOptions{Logger: logTo(logs)})
	h := newHash()
	log.revoke(h, time.Now())
	r.reconcile(ctx)
	log.setErr(errors.New("postgres: connection refused"))
	for range 20 {
		r.reconcile(ctx)
	}
	if !c.isDenied(h) {
		t.Fatal("a known revocation was dropped when Postgres failed")
	}
	if n := logs.Count("cannot read revocations from Postgres"); n != 1 {
		t.Fatalf("%d warnings for 20 failed reads, want 1:\n%s", n, logs.String())
	}
}

// TestRevokeGivesUpOnAHungRedis: the publish of a revocation has its own deadline, so a hung Redis cannot hold the request
// that revoked (the reconcilers finish the job).
func TestRevokeGivesUpOnAHungRedis(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	rdb, err := redisclient.Open(redisclient.Options{URL: srv.URL(), CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	r := NewRevoker(rdb, time.Minute)
	if err := r.Revoke(context.Background(), newHash()); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	t.Cleanup(srv.Resume)
	start := time.Now()
	err = r.Revoke(context.Background(), newHash())
	if err == nil {
		t.Fatal("Revoke into a hung Redis succeeded")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Revoke into a hung Redis took %v, want it to give up within 2 s", took)
	}
}
