package lastused_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

const accountID = "0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01"

// clock is a settable clock shared by the test's mints and the recorder.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now().Truncate(time.Microsecond)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// countingStore counts what reaches the store: calls, and uses per token.
type countingStore struct {
	lastused.Store
	mu      sync.Mutex
	calls   int
	perID   map[string]int
	largest int
}

func count(s lastused.Store) *countingStore { return &countingStore{Store: s, perID: map[string]int{}} }

func (c *countingStore) RecordLastUsed(ctx context.Context, uses []tokens.Use) (int, error) {
	c.mu.Lock()
	c.calls++
	c.largest = max(c.largest, len(uses))
	for _, u := range uses {
		c.perID[u.TokenID]++
	}
	c.mu.Unlock()
	return c.Store.RecordLastUsed(ctx, uses)
}

func (c *countingStore) stats() (calls int, perID map[string]int, largest int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	perID = make(map[string]int, len(c.perID))
	for k, v := range c.perID {
		perID[k] = v
	}
	return c.calls, perID, c.largest
}

// env is a migrated database with a token store, and the pool the recorder writes through (the database directly, or a
// fault proxy in front of it).
type env struct {
	t      *testing.T
	pool   *pgxpool.Pool // direct, for the test's own reads
	store  *postgres.TokenStore
	writes *postgres.TokenStore // what the recorder writes to
	proxy  *testenv.FaultProxy
	clock  *clock
	reader *sdkmetric.ManualReader
	logs   *testenv.LogBuffer
}

func newEnv(t *testing.T, behindProxy bool) *env {
	t.Helper()
	pool := testenv.Postgres(t)
	e := &env{t: t, pool: pool, store: postgres.NewTokenStore(pool), clock: newClock(), reader: sdkmetric.NewManualReader(),
		logs: &testenv.LogBuffer{}}
	e.writes = e.store
	if behindProxy {
		u, err := url.Parse(pool.Config().ConnString())
		if err != nil {
			t.Fatal(err)
		}
		e.proxy = testenv.StartFaultProxy(t, u.Host)
		u.Host = e.proxy.Addr
		e.writes = postgres.NewTokenStore(testenv.Pool(t, u.String()))
	}
	return e
}

func (e *env) recorder(store lastused.Store, opts lastused.Options) *lastused.Recorder {
	e.t.Helper()
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	opts.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.reader)).Meter("test")
	opts.MetricPrefix = "test"
	opts.Logger = slog.New(slog.NewJSONHandler(e.logs, nil))
	r, err := lastused.New(store, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

// mint creates a live token for device, created at the clock's time less an hour.
func (e *env) mint(device string) tokens.Token {
	e.t.Helper()
	return e.mintAt(device, e.clock.Now().Add(-time.Hour))
}

func (e *env) mintAt(device string, created time.Time) tokens.Token {
	e.t.Helper()
	m, err := e.store.Mint(context.Background(), tokens.MintRequest{
		Subject: tokens.AccountSubject(accountID, "alice@example.com"), ClientID: "difyctl", DeviceLabel: device,
		Prefix: "dfoa_", TokenHash: tokens.Hash(fmt.Sprintf("%s-%d", device, created.UnixNano())), Now: created,
		ExpiresAt: created.Add(14 * 24 * time.Hour)})
	if err != nil {
		e.t.Fatal(err)
	}
	return m.Token
}

// lastUsed reads the row's last_used_at straight from Postgres, revoked or not.
func (e *env) lastUsed(id string) *time.Time {
	e.t.Helper()
	var at *time.Time
	if err := e.pool.QueryRow(context.Background(), `SELECT last_used_at FROM oauth_access_tokens WHERE id = $1`, id).
		Scan(&at); err != nil {
		e.t.Fatal(err)
	}
	return at
}

func (e *env) waitLastUsed(id string, want time.Time) {
	e.t.Helper()
	testenv.Eventually(e.t, 10*time.Second, "last_used_at = "+want.String(), func() bool {
		got := e.lastUsed(id)
		return got != nil && got.Equal(want)
	})
}

// counter sums the recorder's counter for one result.
func (e *env) counter(result string) int64 {
	e.t.Helper()
	return testenv.CounterByAttribute(e.t, e.reader, "test_last_used", "result")[result]
}

func TestDisabled(t *testing.T) {
	r, err := lastused.New(nil, lastused.Options{})
	if err != nil || r != nil {
		t.Fatalf("New with no interval = %v, %v; want a nil recorder", r, err)
	}
	r.Record("0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01") // a nil recorder records nothing, and does not panic
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := lastused.New(nil, lastused.Options{Interval: time.Minute}); err == nil {
		t.Fatal("New without a store accepted it")
	}
}

// TestOneWritePerInterval: a thousand uses of one token within a minute reach Postgres as one use, stamped with the
// first; the stored value stays there until the interval has passed, and the next use after it is written.
func TestOneWritePerInterval(t *testing.T) {
	e := newEnv(t, false)
	tok := e.mint("laptop")
	counted := count(e.store)
	r := e.recorder(counted, lastused.Options{Interval: 5 * time.Minute, FlushEvery: 20 * time.Millisecond})

	first := e.clock.Now()
	var wg sync.WaitGroup
	for range 10 { // concurrent, as Checks are
		wg.Go(func() {
			for range 100 {
				r.Record(tok.ID)
			}
		})
	}
	wg.Wait()
	for range 59 { // the rest of the minute, a use a second
		e.clock.Advance(time.Second)
		r.Record(tok.ID)
	}
	e.waitLastUsed(tok.ID, first)
	if _, perID, _ := counted.stats(); perID[tok.ID] != 1 {
		t.Fatalf("%d uses written for one token within a minute, want 1", perID[tok.ID])
	}

	// Just short of the interval: still nothing new. Just past it: the next use is written.
	e.clock.Advance(5*time.Minute - 59*time.Second - time.Microsecond)
	r.Record(tok.ID)
	e.clock.Advance(time.Microsecond)
	second := e.clock.Now()
	r.Record(tok.ID)
	e.waitLastUsed(tok.ID, second)
	if _, perID, _ := counted.stats(); perID[tok.ID] != 2 {
		t.Fatalf("%d uses written over two intervals, want 2", perID[tok.ID])
	}
	if n := e.counter("written"); n != 2 {
		t.Fatalf("written counter = %d, want 2", n)
	}
}

// TestBatches: uses of many tokens are written in batches of BatchSize, without waiting for the flush interval.
func TestBatches(t *testing.T) {
	e := newEnv(t, false)
	var toks []tokens.Token
	for i := range 1000 {
		toks = append(toks, e.mint(fmt.Sprintf("device-%d", i)))
	}
	counted := count(e.store)
	r := e.recorder(counted, lastused.Options{Interval: time.Minute, FlushEvery: time.Hour, BatchSize: 250})
	at := e.clock.Now()
	for _, tok := range toks {
		r.Record(tok.ID)
	}
	var written int
	testenv.Eventually(t, 20*time.Second, "every token written", func() bool {
		return e.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM oauth_access_tokens WHERE last_used_at = $1`, at).Scan(&written) == nil && written == len(toks)
	})
	calls, _, largest := counted.stats()
	if calls != 4 || largest != 250 {
		t.Fatalf("%d writes, the largest of %d uses; want 4 of 250 (the flush interval never came)", calls, largest)
	}
}

// TestNeverRevivesARow: a use noted before its token was revoked or rotated, and written after, writes nothing.
func TestNeverRevivesARow(t *testing.T) {
	e := newEnv(t, false)
	revoked, rotated, live := e.mint("revoked"), e.mint("rotated"), e.mint("live")
	r := e.recorder(e.store, lastused.Options{Interval: time.Minute, FlushEvery: time.Hour})
	used := e.clock.Now()
	for _, tok := range []tokens.Token{revoked, rotated, live} {
		r.Record(tok.ID)
	}
	e.clock.Advance(time.Second)
	if _, err := e.store.Revoke(context.Background(), revoked.Subject(), revoked.ID, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if again := e.mintAt("rotated", e.clock.Now()); again.ID != rotated.ID {
		t.Fatalf("the second login of a device made a new row %s, want %s rotated", again.ID, rotated.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil { // Close writes what is pending
		t.Fatal(err)
	}
	if got := e.lastUsed(live.ID); got == nil || !got.Equal(used) {
		t.Fatalf("live token's last_used_at = %v, want %v", got, used)
	}
	for _, tok := range []tokens.Token{revoked, rotated} {
		if got := e.lastUsed(tok.ID); got != nil {
			t.Fatalf("%s: last_used_at = %v written after the row was revoked or rotated", tok.DeviceLabel, got)
		}
	}
	if n := e.counter("unchanged"); n != 2 {
		t.Fatalf("unchanged counter = %d, want 2", n)
	}
	r.Record(live.ID) // after Close: dropped, counted, no panic
	if n := e.counter("late"); n != 1 {
		t.Fatalf("late counter = %d, want 1", n)
	}
}

// TestPostgresDown: with Postgres hung or refusing, Record still returns at once (the queue fills and the rest is dropped
// and counted), failed writes are counted, and once Postgres is back a token whose write failed is written by its next
// use, without waiting out the interval.
func TestPostgresDown(t *testing.T) {
	e := newEnv(t, true)
	tok := e.mint("laptop")
	others := make([]string, 0, 200)
	for range cap(others) {
		others = append(others, "0b6f3a4e-8c1d-4e2f-9a3b-"+fmt.Sprintf("%012x", len(others)))
	}
	r := e.recorder(e.writes, lastused.Options{Interval: time.Hour, FlushEvery: 20 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, QueueSize: 50, BatchSize: 10})

	e.proxy.Pause()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Record(tok.ID)
		for _, id := range others {
			r.Record(id)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // generous: Record takes microseconds; a Record that waited would wait for ever
		t.Fatal("Record blocked while Postgres hung")
	}
	testenv.Eventually(t, 10*time.Second, "failed writes counted", func() bool { return e.counter("failed") > 0 })
	if e.counter("dropped") == 0 {
		t.Fatal("uses beyond the queue were not counted as dropped")
	}

	e.proxy.Stop()
	e.clock.Advance(time.Second)
	r.Record(tok.ID)
	failed := e.counter("failed")
	testenv.Eventually(t, 10*time.Second, "a refused write counted", func() bool { return e.counter("failed") > failed })
	if got := e.lastUsed(tok.ID); got != nil {
		t.Fatalf("last_used_at = %v written while Postgres was down", got)
	}

	// The outage is logged, not each failure: at most one line per kind per 10 s.
	if lines, failures := e.logs.Count("writing last-used times failed"), e.counter("failed"); lines < 1 || lines > 2 ||
		int64(lines) >= failures {
		t.Fatalf("%d log lines for %d failed uses, want one or two (throttled)\n%s", lines, failures, e.logs.String())
	}
	if lines := e.logs.Count("last-used queue full"); lines < 1 || lines > 2 {
		t.Fatalf("%d queue-full log lines, want one or two (throttled)", lines)
	}

	e.proxy.Start()
	e.proxy.Resume()
	e.clock.Advance(time.Second)
	back := e.clock.Now()
	// Well within the hour's interval, but the failed write let the token go: this use is written.
	testenv.Eventually(t, 20*time.Second, "written once Postgres is back", func() bool {
		r.Record(tok.ID)
		got := e.lastUsed(tok.ID)
		return got != nil && !got.Before(back)
	})
}

// TestCloseIsBounded: Close writes what is pending, and with Postgres hung it gives up after the write timeout.
func TestCloseIsBounded(t *testing.T) {
	e := newEnv(t, true)
	tok := e.mint("laptop")
	r := e.recorder(e.writes, lastused.Options{Interval: time.Hour, FlushEvery: time.Hour, WriteTimeout: 300 * time.Millisecond})
	r.Record(tok.ID)
	e.proxy.Pause()
	t.Cleanup(e.proxy.Resume) // before the pools close: a connection left hanging would hold up their cleanup
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- r.Close(ctx) }()
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("Close with Postgres hung reported the pending uses written")
		}
	case <-time.After(5 * time.Second): // generous against the 300 ms write timeout
		t.Fatal("Close did not give up on a hung Postgres")
	}
	if n := e.counter("failed"); n != 1 {
		t.Fatalf("failed counter = %d, want the 1 pending use", n)
	}
}
