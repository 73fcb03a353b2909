// Package tokencache caches token lookups in Redis in Dify's format (auth:token:<hash>), with the rules that keep a revoked
// token dead (docs/architecture.md, "Revocation propagation"), and an optional in-process layer that follows the revocation
// stream.
//
// What keeps a revoked token dead: revocation writes a tombstone ("invalid") that outlives any positive entry and only then
// publishes the hash on a stream; positive fills are SET NX so they never overwrite a tombstone; verdict merges only touch
// a live entry; an entry past its expires_at, or one that cannot be parsed, is a miss. Because that publish can fail after the
// revocation is committed, a Reconciler also reads the revocations Postgres recorded and denies those hashes in process,
// whatever Redis says, until it has written their tombstones itself.
package tokencache

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/coalesce"
)

const (
	keyPrefix = "auth:token:"
	// tombstone is Dify's negative value.
	tombstone              = "invalid"
	defaultTTL             = 60 * time.Second
	defaultLocalMaxEntries = 100_000
)

// Status is the outcome of a cache lookup.
type Status int

const (
	// Miss: nothing usable is cached; ask Postgres.
	Miss Status = iota
	// Hit: a live entry, not past its expires_at.
	Hit
	// Invalid: a tombstone or negative entry; refuse the token without asking Postgres.
	Invalid
)

func (s Status) String() string {
	switch s {
	case Hit:
		return "hit"
	case Invalid:
		return "invalid"
	default:
		return "miss"
	}
}

// Options configure a Cache.
type Options struct {
	// TTL bounds how long a positive entry lives in Redis and in the local layer (TOKEN_CACHE_TTL); 0 means 60 s.
	TTL time.Duration
	// Local enables the in-process layer in front of Redis. It serves hits only while Run follows the revocation stream.
	Local bool
	// LocalMaxEntries bounds the local layer (least recently used entries go first); 0 means 100 000.
	LocalMaxEntries int
}

// Cache is the token cache. It is safe for concurrent use.
type Cache struct {
	rdb   redis.UniversalClient
	ttl   time.Duration
	local *local // nil without Options.Local
	// denied holds the hashes a Reconciler learned from Postgres were revoked recently: refused without asking Redis. Replaced
	// as a whole by the reconciler, read without a lock on every lookup.
	denied atomic.Pointer[map[string]struct{}]
	// trips sends the Redis reads of concurrent lookups together: a flood of bearers no memory knows (guessed or random
	// ones) costs one round trip per batch, not one per bearer. Fills ride the same round trips (Fill).
	trips    *coalesce.Batcher[op, opResult]
	fillWait time.Duration // defaultFillWait; tests lengthen it
}

// op is one call of the cache's round trips: a read of hash's entry, or, with fill set, a fill of it.
type op struct {
	hash string
	fill *fill
}

// fill is a positive entry to store with SET NX.
type fill struct {
	value  []byte
	ttl    time.Duration // the entry's lifetime as of queued
	queued time.Time
}

// opResult is a read's entry (v, and its remaining ttl: 0 when unknown or unbounded) or whether a fill stored its entry.
type opResult struct {
	v      []byte
	ttl    time.Duration
	stored bool
}

// defaultFillWait is how long a fill waits for a round trip of reads to ride before it goes out on its own. Under load one
// comes within it nearly always, so a cold Check's fill costs no round trip of its own; a fill that waits only delays
// the entry for other replicas (this one's reads carry it: fills are written before the reads of their round trip).
const defaultFillWait = 5 * time.Millisecond

// New returns a cache over rdb. With opts.Local, Run must be running for the local layer to serve anything.
func New(rdb redis.UniversalClient, opts Options) *Cache {
	c := &Cache{rdb: rdb, ttl: opts.TTL, fillWait: defaultFillWait}
	if c.ttl <= 0 {
		c.ttl = defaultTTL
	}
	if opts.Local {
		n := opts.LocalMaxEntries
		if n <= 0 {
			n = defaultLocalMaxEntries
		}
		c.local = newLocal(n, c.ttl)
	}
	c.trips = coalesce.New(c.roundTrip, coalesce.Options{})
	return c
}

func redisKey(hash string) string { return keyPrefix + hash }

// isDenied reports whether a reconciler has learned that hash was revoked.
func (c *Cache) isDenied(hash string) bool {
	set := c.denied.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[hash]
	return ok
}

// Local is Get's first step alone: the entry when the in-process layer may serve it. It never touches Redis, so a caller
// can skip building a Redis deadline for the common warm read. A hash known to be revoked is never served.
func (c *Cache) Local(hash string) (Entry, bool) {
	if c.local == nil || c.isDenied(hash) {
		return Entry{}, false
	}
	return c.local.get(hash, time.Now())
}

// Get looks hash up: a hash known to be revoked is Invalid at once, without Redis; then the local layer (when it is following
// the stream), then Redis. A Redis error is returned with Miss: the caller asks Postgres instead.
func (c *Cache) Get(ctx context.Context, hash string) (Entry, Status, error) {
	var seen uint64
	if c.local != nil {
		// The generation is read before the deny set: a reconciler publishes a hash before it evicts it (which bumps the
		// generation), so a Redis read that missed the denial cannot be stored after the eviction.
		seen = c.local.generation()
	}
	if c.isDenied(hash) {
		return Entry{}, Invalid, nil
	}
	if c.local != nil {
		if e, ok := c.local.get(hash, time.Now()); ok {
			return e, Hit, nil
		}
	}
	sent := time.Now()
	v, ttl, err := c.readEntry(ctx, hash)
	switch {
	case errors.Is(err, redis.Nil):
		return Entry{}, Miss, nil
	case err != nil:
		return Entry{}, Miss, err
	case string(v) == tombstone:
		return Entry{}, Invalid, nil
	}
	e, err := decode(v)
	if err != nil || !time.Now().Before(e.ExpiresAt) {
		return Entry{}, Miss, nil
	}
	if c.local != nil {
		var notAfter time.Time
		if ttl > 0 {
			// Measured from before the request, so the local copy is gone no later than Redis's.
			notAfter = sent.Add(ttl)
		}
		c.local.put(hash, e, seen, time.Now(), notAfter)
	}
	return e, Hit, nil
}

// readEntry GETs hash's entry and, when the local layer may keep it, its remaining TTL in the same round trip: a copy must not
// outlive the Redis entry it was read from. ttl is 0 when unknown or unbounded.
func (c *Cache) readEntry(ctx context.Context, hash string) (v []byte, ttl time.Duration, err error) {
	r, err := c.trips.Do(ctx, op{hash: hash})
	return r.v, r.ttl, err
}

// roundTrip is one round trip for a batch of calls, pipelined: SET NX per fill, then GET (and PTTL) per read, so a read
// of a hash whose fill rides the same round trip finds the entry.
func (c *Cache) roundTrip(ctx context.Context, calls []*coalesce.Call[op, opResult]) {
	pipe := c.rdb.Pipeline()
	sets := make([]*redis.BoolCmd, len(calls))
	gets := make([]*redis.StringCmd, len(calls))
	pttls := make([]*redis.DurationCmd, len(calls))
	now := time.Now()
	for i, call := range calls {
		if f := call.Req.fill; f != nil {
			if ttl := f.ttl - now.Sub(f.queued); ttl >= time.Millisecond { // else expired meanwhile: nothing to store
				sets[i] = pipe.SetNX(ctx, redisKey(call.Req.hash), f.value, ttl)
			}
		}
	}
	for i, call := range calls {
		if call.Req.fill == nil {
			gets[i] = pipe.Get(ctx, redisKey(call.Req.hash))
			if c.local != nil {
				pttls[i] = pipe.PTTL(ctx, redisKey(call.Req.hash))
			}
		}
	}
	if len(pipe.Cmds()) > 0 {
		_, _ = pipe.Exec(ctx) // errors are per command
	}
	for i, call := range calls {
		switch {
		case call.Req.fill != nil && sets[i] == nil:
			call.Answer(opResult{}, errFillExpired)
		case call.Req.fill != nil:
			stored, err := sets[i].Result()
			call.Answer(opResult{stored: stored}, err)
		default:
			v, err := gets[i].Bytes()
			if err != nil {
				call.Answer(opResult{}, err)
				continue
			}
			r := opResult{v: v}
			if pttls[i] != nil {
				r.ttl = max(pttls[i].Val(), 0)
			}
			call.Answer(r, nil)
		}
	}
}

// errFillExpired answers a fill whose entry's lifetime ran out while it waited: there is nothing to store.
var errFillExpired = errors.New("tokencache: the entry expired before its fill went out")

// Fill caches e for hash for the cache TTL (less if the token expires sooner) unless anything is cached there already, a
// tombstone in particular: a fill computed from a Postgres read that raced a revocation must not bring the token back.
// e's membership verdicts go in with it, so a caller that has both writes them in one round trip; should a live entry
// be there already (another replica filled it meanwhile), they are merged into it as RecordVerdict merges them. The write
// rides the next round trip of reads, waiting for one up to defaultFillWait.
func (c *Cache) Fill(ctx context.Context, hash string, e Entry) error {
	var seen uint64
	if c.local != nil {
		seen = c.local.generation() // before the deny set, as in Get
	}
	ttl := min(c.ttl, time.Until(e.ExpiresAt))
	if ttl < time.Millisecond || c.isDenied(hash) {
		return nil // expired or revoked: nothing to cache
	}
	b, err := encode(e)
	if err != nil {
		return err
	}
	queued := time.Now()
	r, err := c.trips.DoWithin(ctx, op{hash: hash, fill: &fill{value: b, ttl: ttl, queued: queued}}, c.fillWait)
	switch {
	case errors.Is(err, errFillExpired):
		return nil
	case err != nil:
		return err
	case r.stored:
		if c.local != nil {
			c.local.put(hash, e, seen, time.Now(), queued.Add(ttl)) // the Redis entry's end: its TTL is counted from queued
		}
		return nil
	}
	for tenantID, member := range e.VerifiedTenants {
		if err := c.RecordVerdict(ctx, hash, tenantID, member); err != nil {
			return err
		}
	}
	return nil
}

// RecordVerdict merges a membership verdict for tenantID into the entry for hash. In Redis only an existing, live entry is
// changed and its TTL is kept; a tombstone or a missing entry is left alone, so a verdict can never recreate a token.
func (c *Cache) RecordVerdict(ctx context.Context, hash, tenantID string, member bool) error {
	if c.local != nil {
		c.local.recordVerdict(hash, tenantID, member)
	}
	m := "0"
	if member {
		m = "1"
	}
	return mergeVerdict.Run(ctx, c.rdb, []string{redisKey(hash)}, tombstone, tenantID, m).Err()
}
