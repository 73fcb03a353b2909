package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// What keeps bearers that are not valid from costing Postgres lookups, and concurrent lookups from multiplying, without
// ever refusing a valid token because of what else came from its address (docs/security.md, "Brute force").

const (
	// negativeTTL is how long a hash that Postgres refused (or that a tombstone marks dead) is refused from memory.
	negativeTTL = 10 * time.Second
	// negativeEntries bounds that memory: one entry is a 64-byte hash.
	negativeEntries = 100_000
	// budgetAddresses bounds the per-replica copy of the invalid-bearer budget.
	budgetAddresses = 100_000
	// defaultSuspectLookupsPerSecond is the suspect lane's rate per process.
	defaultSuspectLookupsPerSecond = 20
)

// localBudget is this replica's count of invalid-bearer lookups per address over fixed one-minute windows. Redis holds the
// budget every replica shares, counting outcomes once known; this copy also holds a slot for each lookup in flight, so a
// burst of concurrent unknown bearers cannot all pass the check before the first of them is counted. It answers alone
// while Redis cannot, and spares a Redis round trip for an address it already knows is over.
type localBudget struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	windows *expirable.LRU[string, budgetWindow]

	// vouched are hashes Postgres found valid lately. Their lookups are never held to their address's budget or the suspect
	// lane: a user whose token is valid must not be refused because others behind the same address send invalid bearers,
	// and the local cache layer, which would normally spare these lookups, stops serving while Redis is unreachable. It only
	// exempts from the budget: the token is still looked up.
	vouched *expirable.LRU[string, struct{}]
}

// vouchedFor is how long a hash found valid stays exempt from the invalid-bearer budget, and vouchedEntries bounds them.
const (
	vouchedFor     = 15 * time.Minute
	vouchedEntries = 200_000
)

type budgetWindow struct {
	start time.Time
	n     int
}

// budgetHold is a slot reserve gave out; the zero value holds nothing.
type budgetHold struct {
	key   string
	start time.Time // of the window the slot was taken in
	// first: nothing else was counted for key in this window when the slot was taken (no lookup in flight, no invalid
	// outcome), so this replica has no reason to suspect the address (admitLookup).
	first bool
}

func newLocalBudget(limit int, window time.Duration, now func() time.Time) *localBudget {
	return &localBudget{limit: limit, window: window, now: now,
		windows: expirable.NewLRU[string, budgetWindow](budgetAddresses, nil, window),
		vouched: expirable.NewLRU[string, struct{}](vouchedEntries, nil, vouchedFor)}
}

// current is key's window as of now; the caller holds mu.
func (b *localBudget) current(key string, now time.Time) budgetWindow {
	w, ok := b.windows.Peek(key)
	if !ok || now.Sub(w.start) >= b.window {
		return budgetWindow{start: now}
	}
	return w
}

// reserve takes a slot for one lookup unless key has spent its budget in this window.
func (b *localBudget) reserve(key string) (budgetHold, bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.current(key, now)
	if w.n >= b.limit {
		return budgetHold{}, false
	}
	w.n++
	b.windows.Add(key, w)
	return budgetHold{key: key, start: w.start, first: w.n == 1}, true
}

// counted is what key has counted in this window: slots held and invalid outcomes (reserve refuses a slot once it reaches
// the limit).
func (b *localBudget) counted(key string) int {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current(key, now).n
}

// worthSharedRead reports whether a lookup from key should read the count the replicas share: this replica already counts
// something for it in this window (admitLookup), and not so much that its own count refuses the address anyway.
func (b *localBudget) worthSharedRead(key string) bool {
	n := b.counted(key)
	return n > 0 && n < b.limit
}

// release gives a slot back: the lookup found a valid token, or could not be made.
func (b *localBudget) release(h budgetHold) {
	if h.key == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w, ok := b.windows.Peek(h.key); ok && w.start.Equal(h.start) && w.n > 0 {
		w.n--
		b.windows.Add(h.key, w)
	}
}

// add counts an invalid outcome that held no slot (a lookup through the suspect lane).
func (b *localBudget) add(key string) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.current(key, now)
	w.n++
	b.windows.Add(key, w)
}

// suspectLane is a token bucket shared by every address over its invalid-bearer budget: a lookup from such an address goes
// ahead while the bucket holds a token, so a valid token behind an address that also sends garbage still gets through,
// and Postgres sees at most rate lookups per second (plus the burst) from all of them together.
type suspectLane struct {
	rate float64 // tokens per second; the burst is one second's worth
	now  func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newSuspectLane(perSecond int, now func() time.Time) *suspectLane {
	return &suspectLane{rate: float64(perSecond), now: now, tokens: float64(perSecond), last: now()}
}

func (l *suspectLane) take() bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// admissions are the lookup admissions being decided or used, by token hash (admitShared).
type admissions struct {
	mu sync.Mutex
	m  map[string]*admissionFlight
}

type admissionFlight struct {
	decided  chan struct{} // closed once admitted is set
	admitted bool
	done     func()
}

// join returns the flight for hash; leader is true when the caller started it and must call decide, then done when its
// lookup is over.
func (s *admissions) join(hash string) (f *admissionFlight, leader bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.m[hash]; ok {
		return f, false
	}
	if s.m == nil {
		s.m = map[string]*admissionFlight{}
	}
	f = &admissionFlight{decided: make(chan struct{})}
	f.done = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.m[hash] == f {
			delete(s.m, hash)
		}
	}
	s.m[hash] = f
	return f, true
}

func (f *admissionFlight) decide(admitted bool) {
	f.admitted = admitted
	close(f.decided)
}

// flights collapses concurrent Postgres reads of the same token hash, or of the same account, into one query: a burst of
// Checks for one token (a cold cache, or every Check while Redis is down) costs one lookup, not one per Check.
type flights struct {
	tokens   flightGroup[lookedUp]
	accounts flightGroup[directory.Account]
}

// flightGroup runs one call per key at a time for all concurrent callers. The first caller runs it on its own goroutine: a
// goroutine started per lookup (as singleflight's DoChan does) begins with a small stack and grows it on every query,
// which cost a cold Check more CPU than the lookup's own Go code. The others wait for its result, each no longer than its
// own ctx.
type flightGroup[T any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[T]
}

type flightCall[T any] struct {
	done    chan struct{} // closed once v and err are set
	v       T
	err     error
	waiters int // callers that joined it, under the group's lock
}

// do runs fn once for all concurrent callers with the same key. fn gets a context that the first caller's cancellation
// does not end (the others still want the answer) but its deadline does, so the first caller waits for fn at most until
// its own deadline. A panic in fn is an error for every caller, as a panic anywhere else in a Check is a 503, not a crash.
func (g *flightGroup[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (v T, err error) {
	g.mu.Lock()
	if c, ok := g.calls[key]; ok {
		c.waiters++
		g.mu.Unlock()
		select {
		case <-c.done:
			return c.v, c.err
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
	c := &flightCall[T]{done: make(chan struct{})}
	if g.calls == nil {
		g.calls = map[string]*flightCall[T]{}
	}
	g.calls[key] = c
	g.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			var zero T
			c.v, c.err = zero, fmt.Errorf("%w: %v", errLookupPanicked, r)
		}
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
		v, err = c.v, c.err
	}()
	fctx, cancel := detach(ctx)
	defer cancel()
	c.v, c.err = fn(fctx)
	return c.v, c.err
}

var errLookupPanicked = errors.New("lookup panicked")

func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	dctx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(dctx, dl)
	}
	return context.WithCancel(dctx)
}

// lookedUp is what one lookup of a hash read: the row and, when the store reads them in the same query
// (TokenAccountStore), its account and its account's membership of tenant.
type lookedUp struct {
	tok         tokens.Token
	withAccount bool              // account was read with the row: its zero value then means the row has none
	account     directory.Account // the row's account, when withAccount
	tenant      string            // the tenant member answers for; "" when none was asked
	member      bool
}

// lookupHash reads hash's row, with its account and the account's membership of tenant (a tenant this Check will
// probably ask about, or "") when the store can read them in the same query.
func (p *Pipeline) lookupHash(ctx context.Context, hash, tenant string) (lookedUp, error) {
	if p.tokenAccounts == nil {
		return p.flights.tokens.do(ctx, hash, func(ctx context.Context) (lookedUp, error) {
			tok, err := p.deps.Tokens.LookupByHash(ctx, hash)
			return lookedUp{tok: tok}, err
		})
	}
	// Keyed by the hash alone: a Check that joins a lookup asked for another tenant's membership uses the row and the
	// account, and asks about its own tenant at the membership step.
	return p.flights.tokens.do(ctx, hash, func(ctx context.Context) (lookedUp, error) {
		tok, a, member, err := p.tokenAccounts.LookupByHashWithAccount(ctx, hash, tenant)
		return lookedUp{tok: tok, withAccount: true, account: a, tenant: tenant, member: member}, err
	})
}

func (p *Pipeline) lookupAccount(ctx context.Context, id string) (directory.Account, error) {
	return p.flights.accounts.do(ctx, id, func(ctx context.Context) (directory.Account, error) {
		return p.deps.Directory.Account(ctx, id)
	})
}

// vouch records that Postgres found hash valid; unvouch forgets it once it is found dead.
func (b *localBudget) vouch(hash string)   { b.vouched.Add(hash, struct{}{}) }
func (b *localBudget) unvouch(hash string) { b.vouched.Remove(hash) }

// isVouched reports whether hash was found valid lately.
func (b *localBudget) isVouched(hash string) bool { _, ok := b.vouched.Peek(hash); return ok }
