package pipeline

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/tokens"
)

// What a Check of a token no cache knows asks of Postgres and Redis: with a store that reads the row, its account and a
// membership in one query, one Postgres round trip; the cache entry is written once, at the end, with the verdict in it.

const (
	coldAccount = "b0000000-0000-4000-8000-000000000001"
	coldTenant  = "a0000000-0000-4000-8000-000000000001"
	otherTenant = "a0000000-0000-4000-8000-000000000002"
	thirdTenant = "a0000000-0000-4000-8000-000000000003"
	coldApp     = "c0000000-0000-4000-8000-000000000001"
)

type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
}

func (c *calls) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// coldLimiter allows every token; spent: the invalid-bearer budget's shared count says the address is over (other replicas
// spent it).
type coldLimiter struct {
	calls *calls
	spent bool
}

func (l coldLimiter) Allow(context.Context, string, int, time.Duration) (RateDecision, error) {
	l.calls.add("limiter.Allow")
	return RateDecision{Allowed: true, Limit: 60, Remaining: 59}, nil
}

func (l coldLimiter) Exceeded(context.Context, string, int, time.Duration) (RateDecision, error) {
	l.calls.add("limiter.Exceeded")
	return RateDecision{Allowed: !l.spent}, nil
}

func (l coldLimiter) Add(context.Context, string, time.Duration) error {
	l.calls.add("limiter.Add")
	return nil
}

// coldCache is a token cache in a map; fills and verdicts are recorded.
type coldCache struct {
	calls   *calls
	mu      sync.Mutex
	entries map[string]TokenEntry
	fills   []TokenEntry
	hold    chan struct{} // when set, a fill waits until it is closed
}

func (c *coldCache) Get(_ context.Context, hash string) (TokenEntry, CacheStatus, error) {
	c.calls.add("cache.Get")
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[hash]; ok {
		return e, CacheHit, nil
	}
	return TokenEntry{}, CacheMiss, nil
}

func (c *coldCache) Local(string) (TokenEntry, bool) { return TokenEntry{}, false }

func (c *coldCache) Fill(_ context.Context, hash string, e TokenEntry) error {
	if c.hold != nil {
		<-c.hold
	}
	c.calls.add("cache.Fill")
	c.mu.Lock()
	defer c.mu.Unlock()
	e.VerifiedTenants = maps.Clone(e.VerifiedTenants)
	c.fills = append(c.fills, e)
	if _, ok := c.entries[hash]; !ok {
		c.entries[hash] = e
	}
	return nil
}

func (c *coldCache) RecordVerdict(context.Context, string, string, bool) error {
	c.calls.add("cache.RecordVerdict")
	return nil
}

// coldStore holds one live row per hash, the account coldAccount, active, and its one membership, of coldTenant.
type coldStore struct {
	calls *calls
	rows  map[string]tokens.Token
}

func (s coldStore) LookupByHash(_ context.Context, hash string) (tokens.Token, error) {
	s.calls.add("tokens.LookupByHash")
	t, ok := s.rows[hash]
	if !ok {
		return tokens.Token{}, tokens.ErrNotFound
	}
	return t, nil
}

func (s coldStore) HardExpire(context.Context, string, time.Time) (bool, error) { return false, nil }

func (s coldStore) AppWithTenant(_ context.Context, appID string) (directory.App, directory.Tenant, bool, error) {
	s.calls.add("dir.AppWithTenant")
	if appID != coldApp {
		return directory.App{}, directory.Tenant{}, false, directory.ErrNotFound
	}
	return directory.App{ID: coldApp, TenantID: coldTenant, Status: directory.AppStatusNormal, EnableAPI: true},
		directory.Tenant{ID: coldTenant, Status: directory.TenantStatusNormal}, true, nil
}

func (s coldStore) Account(_ context.Context, id string) (directory.Account, error) {
	s.calls.add("dir.Account")
	if id != coldAccount {
		return directory.Account{}, directory.ErrNotFound
	}
	return directory.Account{ID: coldAccount, Status: directory.AccountStatusActive}, nil
}

func (s coldStore) IsActiveMember(_ context.Context, tenantID, accountID string) (bool, error) {
	s.calls.add("dir.IsActiveMember")
	return tenantID == coldTenant && accountID == coldAccount, nil
}

// coldAccountStore adds the one-query lookup.
type coldAccountStore struct{ coldStore }

func (s coldAccountStore) LookupByHashWithAccount(ctx context.Context, hash, tenantID string) (tokens.Token, directory.Account, bool, error) {
	s.calls.add("tokens.LookupByHashWithAccount")
	t, ok := s.rows[hash]
	if !ok {
		return tokens.Token{}, directory.Account{}, false, tokens.ErrNotFound
	}
	return t, directory.Account{ID: coldAccount, Status: directory.AccountStatusActive}, tenantID == coldTenant, nil
}

type coldWorld struct {
	p     *Pipeline
	calls *calls
	cache *coldCache
	store coldStore
}

func newColdWorld(t *testing.T, oneQuery bool) *coldWorld {
	t.Helper()
	return newColdWorldWith(t, oneQuery, false, 0)
}

// newColdWorldWith: budgetSpent makes the shared budget count every address as over; suspectPerSecond sets the suspect
// lane's rate (0: the default) and stops the pipeline's clock, so the lane does not refill during the test.
func newColdWorldWith(t *testing.T, oneQuery, budgetSpent bool, suspectPerSecond int) *coldWorld {
	t.Helper()
	policy, err := LoadPolicy("")
	if err != nil {
		t.Fatal(err)
	}
	c := &calls{}
	w := &coldWorld{calls: c, cache: &coldCache{calls: c, entries: map[string]TokenEntry{}},
		store: coldStore{calls: c, rows: map[string]tokens.Token{}}}
	deps := Deps{Limiter: coldLimiter{calls: c, spent: budgetSpent}, Cache: w.cache, Tokens: w.store, Directory: w.store}
	if oneQuery {
		deps.Tokens = coldAccountStore{w.store}
	}
	if suspectPerSecond > 0 {
		stopped := time.Now()
		deps.Now = func() time.Time { return stopped }
	}
	w.p, err = New(policy, Options{EnableOAuthBearer: true, RateLimitPerToken: 60, RateLimitFailOpen: true,
		InvalidBearerPerIPPerMin: 60, SuspectLookupsPerSecond: suspectPerSecond, CheckTimeout: 5 * time.Second,
		ForwardAuthorization: true}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// token adds a live account token and returns its plaintext.
func (w *coldWorld) token(t *testing.T) string {
	t.Helper()
	plain, err := tokens.Generate(tokens.Account)
	if err != nil {
		t.Fatal(err)
	}
	w.store.rows[tokens.Hash(plain)] = tokens.Token{ID: "d0000000-0000-4000-8000-" + tokens.Hash(plain)[:12],
		SubjectEmail: "dana@example.com", SubjectIssuer: tokens.AccountIssuer, AccountID: coldAccount, ClientID: "difyctl",
		Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(plain), ExpiresAt: time.Now().Add(time.Hour)}
	return plain
}

// check runs one Check and waits for the cache fill it started, if any (fills are written after the answer).
func (w *coldWorld) check(method, path, plain string) Decision {
	d := w.p.Check(context.Background(), Request{Method: method, Path: path,
		Headers: map[string]string{"authorization": "Bearer " + plain}})
	w.p.fills.Wait()
	return d
}

// delta runs f and returns how many times each named call was made during it.
func (w *coldWorld) delta(f func(), names ...string) map[string]int {
	before := map[string]int{}
	for _, n := range names {
		before[n] = w.calls.get(n)
	}
	f()
	out := map[string]int{}
	for _, n := range names {
		out[n] = w.calls.get(n) - before[n]
	}
	return out
}

var coldCalls = []string{"tokens.LookupByHash", "tokens.LookupByHashWithAccount", "dir.Account", "dir.IsActiveMember",
	"dir.AppWithTenant", "cache.Fill", "cache.RecordVerdict", "limiter.Exceeded", "limiter.Add"}

func TestColdCheckReadsPostgresOnceAndFillsOnce(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		oneQuery           bool
		want               map[string]int
		allow              bool
		verdict            map[string]bool
	}{
		{"app route, one query", "GET", "/openapi/v1/apps/" + coldApp + "/info", true,
			map[string]int{"tokens.LookupByHashWithAccount": 1, "cache.Fill": 1}, true,
			map[string]bool{coldTenant: true}},
		{"workspace route, one query", "GET", "/openapi/v1/workspaces/" + coldTenant, true,
			map[string]int{"tokens.LookupByHashWithAccount": 1, "cache.Fill": 1}, true,
			map[string]bool{coldTenant: true}},
		{"workspace in the query, not a member, one query", "GET", "/openapi/v1/apps?workspace_id=" + otherTenant, true,
			map[string]int{"tokens.LookupByHashWithAccount": 1, "cache.Fill": 1}, false,
			map[string]bool{otherTenant: false}},
		{"no membership step, one query", "GET", "/openapi/v1/me", true,
			map[string]int{"tokens.LookupByHashWithAccount": 1, "cache.Fill": 1}, true, nil},
		{"a store without the one-query lookup", "GET", "/openapi/v1/apps/" + coldApp + "/info", false,
			map[string]int{"tokens.LookupByHash": 1, "dir.Account": 1, "dir.IsActiveMember": 1, "cache.Fill": 1}, true,
			map[string]bool{coldTenant: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newColdWorld(t, tc.oneQuery)
			// The app is in memory, as it is for any app used in the last few seconds.
			if d := w.check("GET", "/openapi/v1/apps/"+coldApp+"/info", w.token(t)); !d.Allow {
				t.Fatalf("warming the app: %+v", d)
			}
			plain := w.token(t)
			var d Decision
			got := w.delta(func() { d = w.check(tc.method, tc.path, plain) }, coldCalls...)
			for _, name := range coldCalls {
				if got[name] != tc.want[name] {
					t.Errorf("%s called %d times, want %d (all: %v)", name, got[name], tc.want[name], got)
				}
			}
			if d.Allow != tc.allow {
				t.Fatalf("decision %+v, want allow %v", d, tc.allow)
			}
			fill := w.cache.fills[len(w.cache.fills)-1]
			if !maps.Equal(fill.VerifiedTenants, tc.verdict) || fill.TokenID != w.store.rows[tokens.Hash(plain)].ID {
				t.Fatalf("filled %+v, want the token with verdicts %v", fill, tc.verdict)
			}

			// Warm now: no Postgres, no fill, no budget read (the hash was found valid); a verdict not in the entry yet is
			// read and merged into it.
			got = w.delta(func() { d = w.check("GET", "/openapi/v1/workspaces/"+thirdTenant, plain) }, coldCalls...)
			if got["dir.IsActiveMember"] != 1 || got["cache.RecordVerdict"] != 1 || got["cache.Fill"] != 0 ||
				got["tokens.LookupByHash"]+got["tokens.LookupByHashWithAccount"] != 0 || got["limiter.Exceeded"] != 0 ||
				d.Allow {
				t.Fatalf("warm Check of another workspace: calls %v, decision %+v", got, d)
			}
		})
	}
}

// The invalid-bearer budget's shared count is read, beside the cache read, only for an address this replica already
// counts something for: the first unknown bearer from a clean address is looked up on the local slot alone and charged;
// the next one reads the shared count; a valid token from the suspected address reads it too; a hash refused lately costs
// nothing; past this replica's own count no Redis read is made at all.
func TestColdCheckBudgetReads(t *testing.T) {
	w := newColdWorld(t, true)
	unknown := func() string {
		plain, err := tokens.Generate(tokens.Account)
		if err != nil {
			t.Fatal(err)
		}
		return plain
	}
	refused := func(want map[string]int, what string) {
		t.Helper()
		plain := unknown()
		got := w.delta(func() {
			if d := w.check("GET", "/openapi/v1/me", plain); d.Code != CodeInvalidBearer {
				t.Fatalf("%s: %+v", what, d)
			}
		}, coldCalls...)
		for _, name := range coldCalls {
			if got[name] != want[name] {
				t.Fatalf("%s: calls %v, want %v", what, got, want)
			}
		}
	}
	refused(map[string]int{"tokens.LookupByHashWithAccount": 1, "limiter.Add": 1}, "first unknown bearer of a clean address")
	refused(map[string]int{"tokens.LookupByHashWithAccount": 1, "limiter.Exceeded": 1, "limiter.Add": 1},
		"second unknown bearer")
	got := w.delta(func() {
		if d := w.check("GET", "/openapi/v1/me", w.token(t)); !d.Allow {
			t.Fatalf("valid token from the suspected address: %+v", d)
		}
	}, coldCalls...)
	if got["limiter.Exceeded"] != 1 || got["limiter.Add"] != 0 || got["tokens.LookupByHashWithAccount"] != 1 {
		t.Fatalf("valid token from the suspected address: calls %v, want one budget read, no charge, one lookup", got)
	}
	// The replica's own count fills up; past it no budget read is sent (the lookups go through the suspect lane).
	for range 70 {
		w.check("GET", "/openapi/v1/me", unknown())
	}
	got = w.delta(func() { w.check("GET", "/openapi/v1/me", unknown()) }, coldCalls...)
	if got["limiter.Exceeded"] != 0 {
		t.Fatalf("an address over this replica's count: calls %v, want no budget read", got)
	}
}

// An address other replicas have spent the budget of costs this replica one lookup before it reads the shared count: the
// next lookup goes through the suspect lane (here one a second), and the one after that is refused with a 429.
func TestAnAddressSpentElsewhereCostsOneLookupHere(t *testing.T) {
	w := newColdWorldWith(t, true, true, 1)
	var codes []Code
	for range 3 {
		plain, err := tokens.Generate(tokens.Account)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, w.check("GET", "/openapi/v1/me", plain).Code)
	}
	want := []Code{CodeInvalidBearer, CodeInvalidBearer, CodeRateLimited}
	if !slices.Equal(codes, want) {
		t.Fatalf("answers %v, want %v", codes, want)
	}
	if n := w.calls.get("tokens.LookupByHashWithAccount"); n != 2 {
		t.Fatalf("%d lookups, want 2: the first on the local slot, the second through the lane", n)
	}
}

// A cold Check answers without waiting for its cache fill; WaitFills (extauthz's shutdown) waits for it, up to its ctx.
func TestColdCheckAnswersBeforeItsFill(t *testing.T) {
	w := newColdWorld(t, true)
	w.cache.hold = make(chan struct{})
	plain := w.token(t)
	d := w.p.Check(context.Background(), Request{Method: "GET", Path: "/openapi/v1/me",
		Headers: map[string]string{"authorization": "Bearer " + plain}})
	if !d.Allow || w.calls.get("cache.Fill") != 0 {
		t.Fatalf("decision %+v with %d fills done; want an allow while the fill is still held", d, w.calls.get("cache.Fill"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	w.p.WaitFills(ctx) // returns at its deadline: the fill is still held
	cancel()
	if w.calls.get("cache.Fill") != 0 {
		t.Fatal("the held fill completed")
	}
	close(w.cache.hold)
	w.p.WaitFills(context.Background())
	if w.calls.get("cache.Fill") != 1 {
		t.Fatalf("%d fills after WaitFills, want 1", w.calls.get("cache.Fill"))
	}
}
