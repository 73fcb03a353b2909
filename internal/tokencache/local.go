package tokencache

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// local is the in-process layer. It may serve an entry only while it can prove it has seen every revocation up to about
// now: Run renews that proof (fresh) after each successful stream read, and every eviction or flush bumps gen, so an entry
// read from Redis before a revocation was processed is not stored after it.
type local struct {
	ttl     time.Duration
	entries *lru.Cache[string, localEntry]

	mu         sync.Mutex    // orders puts against evictions and flushes
	gen        atomic.Uint64 // bumped by every eviction and flush
	freshUntil atomic.Int64  // unix nanoseconds; 0 while not following the stream
}

type localEntry struct {
	e     Entry
	until time.Time // cache TTL from insertion, never past the token's expiry
}

func newLocal(size int, ttl time.Duration) *local {
	entries, err := lru.New[string, localEntry](size)
	if err != nil {
		panic(err) // unreachable: size is positive
	}
	return &local{ttl: ttl, entries: entries}
}

func (l *local) get(hash string, now time.Time) (Entry, bool) {
	if now.UnixNano() >= l.freshUntil.Load() {
		return Entry{}, false
	}
	le, ok := l.entries.Get(hash)
	if !ok || !now.Before(le.until) {
		return Entry{}, false
	}
	return le.e, true
}

// generation is read before going to Redis and handed back to put.
func (l *local) generation() uint64 { return l.gen.Load() }

// put stores e unless anything was evicted or flushed since seen was read: that eviction may have been this very hash,
// processed between our Redis read and now. The copy lives for the cache TTL, never past the token's expiry, nor past
// notAfter (when set): the end of the Redis entry it was read from.
func (l *local) put(hash string, e Entry, seen uint64, now, notAfter time.Time) {
	until := now.Add(l.ttl)
	if e.ExpiresAt.Before(until) {
		until = e.ExpiresAt
	}
	if !notAfter.IsZero() && notAfter.Before(until) {
		until = notAfter
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen.Load() != seen || now.UnixNano() >= l.freshUntil.Load() || !now.Before(until) {
		return
	}
	l.entries.Add(hash, localEntry{e: e, until: until})
}

func (l *local) recordVerdict(hash, tenantID string, member bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.entries.Peek(hash)
	if !ok {
		return
	}
	// Copy on write: readers hold the old map.
	verdicts := make(map[string]bool, len(le.e.VerifiedTenants)+1)
	maps.Copy(verdicts, le.e.VerifiedTenants)
	verdicts[tenantID] = member
	le.e.VerifiedTenants = verdicts
	l.entries.Add(hash, le)
}

func (l *local) evict(hashes ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen.Add(1)
	for _, h := range hashes {
		l.entries.Remove(h)
	}
}

// flush stops serving and drops everything, until markFresh.
func (l *local) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.freshUntil.Store(0)
	l.gen.Add(1)
	l.entries.Purge()
}

func (l *local) markFresh(until time.Time) { l.freshUntil.Store(until.UnixNano()) }
