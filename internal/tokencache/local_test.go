package tokencache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
)

// overwrite changes the Redis entry behind the local layer's back (no stream event), so a test can tell which layer answered.
func overwrite(t *testing.T, c *Cache, hash string, e Entry) {
	t.Helper()
	b, err := encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.rdb.Set(context.Background(), redisKey(hash), b, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestLocalLayerServesOnlyWhileFollowingTheStream(t *testing.T) {
	ctx := context.Background()
	c := New(testenv.Redis(t), Options{TTL: time.Minute, Local: true})
	h := newHash()
	e := accountEntry()
	if err := c.Fill(ctx, h, e); err != nil {
		t.Fatal(err)
	}
	changed := e
	changed.ClientID = "changed-in-redis"
	overwrite(t, c, h, changed)
	// Run is not running: every Get goes to Redis.
	if got, st, err := c.Get(ctx, h); err != nil || st != Hit || got.ClientID != "changed-in-redis" {
		t.Fatalf("without Run: %+v, %v, %v; want Redis's entry", got, st, err)
	}
	if _, ok := c.Local(h); ok {
		t.Fatal("Local served an entry while not following the stream")
	}

	runLocal(t, c)
	if got, _, _ := c.Get(ctx, h); got.ClientID != "changed-in-redis" {
		t.Fatalf("first Get after Run: %+v", got)
	}
	overwrite(t, c, h, e)
	if got, st, err := c.Get(ctx, h); err != nil || st != Hit || got.ClientID != "changed-in-redis" {
		t.Fatalf("with Run: %+v, %v, %v; want the locally cached entry", got, st, err)
	}
	if got, ok := c.Local(h); !ok || got.ClientID != "changed-in-redis" {
		t.Fatalf("Local with Run: %+v, %v; want the locally cached entry", got, ok)
	}
	if _, ok := c.Local(newHash()); ok {
		t.Fatal("Local served a hash it never read")
	}
}

func TestLocalLayerEvictsWithinASecondOfARevocationElsewhere(t *testing.T) {
	ctx := context.Background()
	url := testenv.RedisURL(t)
	c := New(testenv.RedisClient(t, url), Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	revoker := NewRevoker(testenv.RedisClient(t, url), time.Minute) // another process's client
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	if _, st, _ := c.Get(ctx, h); st != Hit {
		t.Fatalf("before revocation: %v", st)
	}
	if err := revoker.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for {
		_, st, err := c.Get(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if st == Invalid {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("still %v more than 1s after the revocation", st)
		}
		time.Sleep(5 * time.Millisecond) // polling interval of a bounded wait
	}
	if _, st, _ := c.Get(ctx, h); st != Invalid {
		t.Fatalf("revoked token came back: %v", st)
	}
}

func TestRevokeRacingFillNeverResurrects(t *testing.T) {
	ctx := context.Background()
	url := testenv.RedisURL(t)
	c := New(testenv.RedisClient(t, url), Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	revoker := NewRevoker(testenv.RedisClient(t, url), time.Minute)
	hashes := make([]string, 200)
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(hashes))
	for i := range hashes {
		h := newHash()
		hashes[i] = h
		wg.Go(func() { errs <- c.Fill(ctx, h, accountEntry()) })
		wg.Go(func() { _, _, err := c.Get(ctx, h); errs <- err })
		wg.Go(func() { errs <- revoker.Revoke(ctx, h) })
		wg.Go(func() { _, _, err := c.Get(ctx, h); errs <- err })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hashes {
		if v := c.rdb.Get(ctx, redisKey(h)).Val(); v != "invalid" {
			t.Fatalf("Redis holds %q for a revoked token", v)
		}
	}
	// Every revocation reaches the local layer within a second; after that no revoked token may be served.
	deadline := time.Now().Add(5 * time.Second)
	for _, h := range hashes {
		for {
			_, st, err := c.Get(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			if st == Invalid {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("revoked token still %v", st)
			}
			time.Sleep(5 * time.Millisecond) // polling interval of a bounded wait
		}
	}
	for _, h := range hashes {
		if _, st, _ := c.Get(ctx, h); st != Invalid {
			t.Fatalf("revoked token came back: %v", st)
		}
	}
}

func TestLocalLayerFlushesWhenRedisRestarts(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	c := New(srv.Client(), Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	if _, st, _ := c.Get(ctx, h); st != Hit {
		t.Fatalf("before restart: %v", st)
	}

	srv.Stop()
	// Cut off from the stream, the local layer must stop answering: Get goes to (dead) Redis and reports its error.
	testenv.Eventually(t, 5*time.Second, "Get to fail with Redis down", func() bool {
		_, st, err := c.Get(ctx, h)
		return err != nil && st == Miss
	})
	srv.Start() // empty: the entry, and any revocation published meanwhile, are gone
	testenv.Eventually(t, 5*time.Second, "Get to miss after the restart", func() bool {
		_, st, err := c.Get(ctx, h)
		return err == nil && st == Miss
	})

	// And it recovers: following the new stream, it serves again.
	testenv.Eventually(t, 5*time.Second, "local layer to follow the new stream", func() bool {
		return time.Now().UnixNano() < c.local.freshUntil.Load()
	})
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	changed := accountEntry()
	changed.ClientID = "changed-in-redis"
	overwrite(t, c, h, changed)
	testenv.Eventually(t, 5*time.Second, "local hit after recovery", func() bool {
		got, st, err := c.Get(ctx, h)
		return err == nil && st == Hit && got.ClientID == accountEntry().ClientID
	})
}

func TestLocalLayerResumesFromTheLastIDAfterAReconnect(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute, Local: true})
	r := NewRevoker(rdb, time.Minute)
	if err := r.Revoke(ctx, newHash()); err != nil {
		t.Fatal(err)
	}
	runLocal(t, c)
	last := rdb.XRevRangeN(ctx, revocationStream, "+", "-", 1).Val()[0].ID
	// Anchored at the end of the stream ("$"), the entry published before the start is not replayed, and the id it would
	// resume from is the stream's last.
	if id, err := c.anchor(ctx, ""); err != nil || id != last {
		t.Fatalf("anchor on first start: %q, %v; want %q", id, err, last)
	}
	if err := r.Revoke(ctx, newHash()); err != nil {
		t.Fatal(err)
	}
	if id, err := c.anchor(ctx, last); err != nil || id != last {
		t.Fatalf("anchor after a reconnect: %q, %v; want the last id seen, %q", id, err, last)
	}
	// Once the stream no longer holds that id (trimmed, or a new server), it starts again from the end.
	rdb.XTrimMaxLen(ctx, revocationStream, 0)
	if err := r.Revoke(ctx, newHash()); err != nil {
		t.Fatal(err)
	}
	newLast := rdb.XRevRangeN(ctx, revocationStream, "+", "-", 1).Val()[0].ID
	if id, err := c.anchor(ctx, last); err != nil || id != newLast {
		t.Fatalf("anchor after trimming: %q, %v; want the end, %q", id, err, newLast)
	}
}

func TestLocalLayerNeverServesAnExpiredToken(t *testing.T) {
	ctx := context.Background()
	c := New(testenv.Redis(t), Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	h := newHash()
	e := accountEntry()
	e.ExpiresAt = time.Now().Add(300 * time.Millisecond)
	if err := c.Fill(ctx, h, e); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the entry to expire", func() bool {
		before := time.Now()
		_, st, err := c.Get(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if st == Hit && !before.Before(e.ExpiresAt) {
			t.Fatalf("served at %v, after its expiry %v", before, e.ExpiresAt)
		}
		return st == Miss
	})
}

func TestLocalRecordVerdict(t *testing.T) {
	ctx := context.Background()
	c := New(testenv.Redis(t), Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	before, _, _ := c.Get(ctx, h)
	if err := c.RecordVerdict(ctx, h, "w1", true); err != nil {
		t.Fatal(err)
	}
	after, st, _ := c.Get(ctx, h)
	if st != Hit || !after.VerifiedTenants["w1"] {
		t.Fatalf("local entry after the verdict: %+v, %v", after, st)
	}
	if _, ok := before.VerifiedTenants["w1"]; ok {
		t.Fatal("a verdict changed an entry already handed out")
	}
}

func TestLocalLayerIsBounded(t *testing.T) {
	ctx := context.Background()
	c := New(testenv.Redis(t), Options{TTL: time.Minute, Local: true, LocalMaxEntries: 10})
	runLocal(t, c)
	for i := range 50 {
		if err := c.Fill(ctx, fmt.Sprint(i), accountEntry()); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.local.entries.Len(); n != 10 {
		t.Fatalf("local layer holds %d entries, want its bound 10", n)
	}
}

func BenchmarkGetLocalHit(b *testing.B) {
	ctx := context.Background()
	c := New(testenv.Redis(b), Options{TTL: time.Hour, Local: true})
	runLocal(b, c)
	hashes := make([]string, 1000)
	for i := range hashes {
		hashes[i] = newHash()
		if err := c.Fill(ctx, hashes[i], accountEntry()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, st, err := c.Get(ctx, hashes[i%len(hashes)]); err != nil || st != Hit {
				b.Errorf("%v, %v", st, err)
				return
			}
			i++
		}
	})
}

func TestLocalLayerFlushesWhenItFellBehindATrim(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute, Local: true})
	r := NewRevoker(rdb, time.Minute)
	if err := r.Revoke(ctx, newHash()); err != nil {
		t.Fatal(err)
	}
	lastID := rdb.XRevRangeN(ctx, revocationStream, "+", "-", 1).Val()[0].ID
	c.local.markFresh(time.Now().Add(time.Hour))
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	if _, st, _ := c.Get(ctx, h); st != Hit {
		t.Fatalf("before: %v", st)
	}
	// While this reader was away, more revocations than it reads at once were published and the stream was trimmed past
	// the last id it saw: h's revocation could have been among the lost ones.
	for range streamBatch + 100 {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: revocationStream, Values: []any{"hash", newHash()}})
	}
	rdb.XTrimMaxLen(ctx, revocationStream, streamBatch+50)

	readCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.read(readCtx, &lastID) }()
	testenv.Eventually(t, 5*time.Second, "the local layer to drop h", func() bool {
		_, ok := c.local.entries.Peek(h)
		return !ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestLocalPutLosesToAnEvictionItDidNotSee(t *testing.T) {
	l := newLocal(10, time.Minute)
	now := time.Now()
	l.markFresh(now.Add(time.Hour))
	e := accountEntry()

	seen := l.generation() // read before going to Redis
	l.evict("revoked-meanwhile")
	l.put("h", e, seen, now, time.Time{}) // the Redis read may predate that revocation
	if _, ok := l.get("h", now); ok {
		t.Fatal("an entry read before an eviction was stored after it")
	}

	seen = l.generation()
	l.put("h", e, seen, now, time.Time{})
	if _, ok := l.get("h", now); !ok {
		t.Fatal("an entry read after the last eviction was not stored")
	}
	l.flush()
	if _, ok := l.get("h", now); ok {
		t.Fatal("served after a flush")
	}
	l.put("h2", e, l.generation(), now, time.Time{})
	if n := l.entries.Len(); n != 0 {
		t.Fatalf("stored %d entries while not following the stream", n)
	}
}

// TestLocalLayerNeverOutlivesTheRedisEntry: an entry read from Redis late in its life is kept locally only as long as Redis
// keeps it, so a change that only the TTL propagates (a banned account, a lost membership) is seen within TOKEN_CACHE_TTL
// on every replica, not within twice that.
func TestLocalLayerNeverOutlivesTheRedisEntry(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	h := newHash()
	// Another replica filled the entry most of a TTL ago: half a second of it is left.
	b, err := encode(accountEntry())
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, redisKey(h), b, 500*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if _, st, err := c.Get(ctx, h); err != nil || st != Hit {
		t.Fatalf("Get: %v, %v; want a hit", st, err)
	}
	testenv.Eventually(t, 5*time.Second, "the Redis entry to expire", func() bool {
		return rdb.Exists(ctx, redisKey(h)).Val() == 0
	})
	if _, st, err := c.Get(ctx, h); err != nil || st != Miss {
		t.Fatalf("after Redis dropped the entry: %v, %v; want a miss", st, err)
	}
}
