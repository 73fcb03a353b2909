package tokencache

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

func TestFillWritesDifysJSON(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute})
	h := newHash()
	e := accountEntry()
	e.VerifiedTenants = map[string]bool{"t1": true}
	if err := c.Fill(ctx, h, e); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, "auth:token:"+h).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("value is not JSON: %v", err)
	}
	want := []string{"account_id", "client_id", "expires_at", "subject_email", "subject_issuer", "token_id", "verified_tenants"}
	if got := slices.Sorted(maps.Keys(fields)); !slices.Equal(got, want) {
		t.Fatalf("fields %v, want %v", got, want)
	}
	if fields["subject_email"] != e.SubjectEmail || fields["subject_issuer"] != "dify:account" ||
		fields["account_id"] != e.AccountID || fields["client_id"] != "difyctl" || fields["token_id"] != e.TokenID {
		t.Fatalf("fields %v do not match %+v", fields, e)
	}
	if fields["expires_at"] != e.ExpiresAt.Format("2006-01-02T15:04:05.000000+00:00") {
		t.Fatalf("expires_at %v is not ISO-8601 UTC", fields["expires_at"])
	}
	if vt, ok := fields["verified_tenants"].(map[string]any); !ok || vt["t1"] != true {
		t.Fatalf("verified_tenants %v, want an object", fields["verified_tenants"])
	}
	if ttl := rdb.TTL(ctx, "auth:token:"+h).Val(); ttl <= 50*time.Second || ttl > time.Minute {
		t.Fatalf("TTL %v, want the cache TTL", ttl)
	}

	got, st, err := c.Get(ctx, h)
	if err != nil || st != Hit {
		t.Fatalf("Get: %v, %v", st, err)
	}
	if got.SubjectEmail != e.SubjectEmail || got.SubjectIssuer != e.SubjectIssuer || got.AccountID != e.AccountID ||
		got.ClientID != e.ClientID || got.TokenID != e.TokenID || !got.ExpiresAt.Equal(e.ExpiresAt) ||
		!maps.Equal(got.VerifiedTenants, e.VerifiedTenants) {
		t.Fatalf("round trip: got %+v, want %+v", got, e)
	}
}

func TestExternalSubjectHasNullAccountID(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{})
	h := newHash()
	e := accountEntry()
	e.AccountID, e.SubjectIssuer, e.VerifiedTenants = "", "https://idp.example.com", nil
	if err := c.Fill(ctx, h, e); err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	_ = json.Unmarshal([]byte(rdb.Get(ctx, "auth:token:"+h).Val()), &fields)
	if v, ok := fields["account_id"]; !ok || v != nil {
		t.Fatalf("account_id = %v (present %v), want null", v, ok)
	}
	if vt, ok := fields["verified_tenants"].(map[string]any); !ok || len(vt) != 0 {
		t.Fatalf("verified_tenants = %v, want {}", fields["verified_tenants"])
	}
	got, st, err := c.Get(ctx, h)
	if err != nil || st != Hit || got.AccountID != "" || got.SubjectIssuer != "https://idp.example.com" {
		t.Fatalf("Get: %+v, %v, %v", got, st, err)
	}
}

func TestGetReadsEntriesDifyWrote(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{})
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for _, stamp := range []string{
		exp.Format("2006-01-02T15:04:05+00:00"),                // isoformat of an aware datetime
		exp.Format("2006-01-02T15:04:05.000000"),               // isoformat of a naive UTC datetime
		exp.Format("2006-01-02T15:04:05Z"),                     // RFC 3339
		exp.In(time.FixedZone("x", 3600)).Format(time.RFC3339), // another offset
	} {
		h := newHash()
		v := `{"subject_email":"ada@example.com","subject_issuer":"dify:account","account_id":"a1","client_id":"difyctl",` +
			`"token_id":"t1","expires_at":"` + stamp + `","verified_tenants":{"w1":false}}`
		rdb.Set(ctx, "auth:token:"+h, v, time.Minute)
		e, st, err := c.Get(ctx, h)
		if err != nil || st != Hit || !e.ExpiresAt.Equal(exp) || e.VerifiedTenants["w1"] != false || len(e.VerifiedTenants) != 1 {
			t.Errorf("expires_at %q: %+v, %v, %v", stamp, e, st, err)
		}
	}
}

func TestUnusableValuesAreMisses(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{})
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, v := range []string{
		"garbage",
		"{",
		"[]",
		`{"subject_email":"a@b.c"}`,
		`{"subject_email":"a@b.c","client_id":"difyctl","token_id":"t","expires_at":"tomorrow"}`,
		`{"subject_email":"a@b.c","client_id":"difyctl","token_id":7,"expires_at":"2099-01-01T00:00:00Z"}`,
		`{"subject_email":"a@b.c","client_id":"difyctl","token_id":"t","expires_at":"2099-01-01T00:00:00Z","verified_tenants":[1]}`,
		`{"subject_email":"a@b.c","client_id":"difyctl","token_id":"t","expires_at":"` + past + `"}`, // expired
	} {
		h := newHash()
		rdb.Set(ctx, "auth:token:"+h, v, time.Minute)
		if _, st, err := c.Get(ctx, h); err != nil || st != Miss {
			t.Errorf("value %q: %v, %v; want a miss", v, st, err)
		}
	}
	if _, st, err := c.Get(ctx, newHash()); err != nil || st != Miss {
		t.Errorf("absent key: %v, %v; want a miss", st, err)
	}
}

func TestFillAfterRevokeStaysInvalid(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute})
	r := NewRevoker(rdb, time.Minute)
	h := newHash()
	if err := r.Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	if _, st, err := c.Get(ctx, h); err != nil || st != Invalid {
		t.Fatalf("after Revoke then Fill: %v, %v; want invalid", st, err)
	}
	if ttl := rdb.TTL(ctx, "auth:token:"+h).Val(); ttl < 65*time.Second || ttl > 70*time.Second {
		t.Fatalf("tombstone TTL %v, want cache TTL + 10s", ttl)
	}
	msgs := rdb.XRange(ctx, "authgate:revocations", "-", "+").Val()
	if len(msgs) != 1 || msgs[0].Values["hash"] != h {
		t.Fatalf("stream %v, want one entry with the hash", msgs)
	}
}

func TestRevokeOverwritesAPositiveEntry(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{})
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	if err := NewRevoker(rdb, 0).Revoke(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, st, err := c.Get(ctx, h); err != nil || st != Invalid {
		t.Fatalf("%v, %v; want invalid", st, err)
	}
}

func TestRecordVerdict(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute})
	h := newHash()
	if err := c.Fill(ctx, h, accountEntry()); err != nil {
		t.Fatal(err)
	}
	rdb.Expire(ctx, "auth:token:"+h, 30*time.Second) // a TTL the merge must keep
	if err := c.RecordVerdict(ctx, h, "w1", true); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordVerdict(ctx, h, "w2", false); err != nil {
		t.Fatal(err)
	}
	e, st, err := c.Get(ctx, h)
	if err != nil || st != Hit || !maps.Equal(e.VerifiedTenants, map[string]bool{"w1": true, "w2": false}) {
		t.Fatalf("after merges: %+v, %v, %v", e, st, err)
	}
	if e.TokenID != accountEntry().TokenID || e.AccountID != accountEntry().AccountID {
		t.Fatalf("merge changed other fields: %+v", e)
	}
	if ttl := rdb.TTL(ctx, "auth:token:"+h).Val(); ttl <= 20*time.Second || ttl > 30*time.Second {
		t.Fatalf("TTL %v after merges, want the entry's own (30s)", ttl)
	}
	var fields map[string]any
	_ = json.Unmarshal([]byte(rdb.Get(ctx, "auth:token:"+h).Val()), &fields)
	if v, ok := fields["verified_tenants"].(map[string]any); !ok || v["w1"] != true || v["w2"] != false {
		t.Fatalf("merged JSON verified_tenants %v", fields["verified_tenants"])
	}

	// A tombstone is left alone, TTL included.
	dead := newHash()
	if err := NewRevoker(rdb, time.Minute).Revoke(ctx, dead); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordVerdict(ctx, dead, "w1", true); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, "auth:token:"+dead).Val(); v != "invalid" {
		t.Fatalf("tombstone became %q", v)
	}
	if ttl := rdb.TTL(ctx, "auth:token:"+dead).Val(); ttl < 65*time.Second {
		t.Fatalf("tombstone TTL changed to %v", ttl)
	}
	// A missing entry is not created.
	missing := newHash()
	if err := c.RecordVerdict(ctx, missing, "w1", true); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, "auth:token:"+missing).Val(); n != 0 {
		t.Fatal("a verdict created an entry")
	}
	// Garbage is left alone.
	junk := newHash()
	rdb.Set(ctx, "auth:token:"+junk, "not json", time.Minute)
	if err := c.RecordVerdict(ctx, junk, "w1", true); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, "auth:token:"+junk).Val(); v != "not json" {
		t.Fatalf("garbage became %q", v)
	}
}

// A fill that finds an entry there merges its verdicts into a live one, keeping that entry's TTL, and leaves a tombstone
// alone.
func TestFillMergesVerdictsIntoAnEntryAlreadyThere(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute})
	h := newHash()
	first := accountEntry()
	first.VerifiedTenants = map[string]bool{"w1": true}
	if err := c.Fill(ctx, h, first); err != nil {
		t.Fatal(err)
	}
	rdb.Expire(ctx, "auth:token:"+h, 30*time.Second)
	second := accountEntry()
	second.VerifiedTenants = map[string]bool{"w2": false}
	if err := c.Fill(ctx, h, second); err != nil {
		t.Fatal(err)
	}
	e, st, err := c.Get(ctx, h)
	if err != nil || st != Hit || !maps.Equal(e.VerifiedTenants, map[string]bool{"w1": true, "w2": false}) {
		t.Fatalf("after two fills: %+v, %v, %v", e, st, err)
	}
	if ttl := rdb.TTL(ctx, "auth:token:"+h).Val(); ttl <= 20*time.Second || ttl > 30*time.Second {
		t.Fatalf("TTL %v after the second fill, want the first entry's (30s)", ttl)
	}

	dead := newHash()
	if err := NewRevoker(rdb, time.Minute).Revoke(ctx, dead); err != nil {
		t.Fatal(err)
	}
	if err := c.Fill(ctx, dead, second); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, "auth:token:"+dead).Val(); v != "invalid" {
		t.Fatalf("tombstone became %q", v)
	}
}

func TestFillCapsTTLAtExpiry(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute})
	h := newHash()
	e := accountEntry()
	e.ExpiresAt = time.Now().Add(5 * time.Second)
	if err := c.Fill(ctx, h, e); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, "auth:token:"+h).Val(); ttl <= 0 || ttl > 5*time.Second {
		t.Fatalf("TTL %v, want at most the token's remaining 5s", ttl)
	}
	expired := newHash()
	e.ExpiresAt = time.Now().Add(-time.Second)
	if err := c.Fill(ctx, expired, e); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, "auth:token:"+expired).Val(); n != 0 {
		t.Fatal("an expired token was cached")
	}
}

func TestRedisDownIsAnError(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c := New(srv.Client(), Options{Local: true})
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, st, err := c.Get(ctx, newHash()); err == nil || st != Miss {
		t.Fatalf("Get with Redis down: %v, %v; want a miss with an error", st, err)
	}
	if err := c.Fill(ctx, newHash(), accountEntry()); err == nil {
		t.Fatal("Fill with Redis down: no error")
	}
	if err := NewRevoker(srv.Client(), 0).Revoke(ctx, newHash()); err == nil {
		t.Fatal("Revoke with Redis down: no error")
	}
}

// Concurrent lookups share round trips (one pipelined read per batch); each still gets its own entry, miss or tombstone,
// and the local layer keeps a copy only as long as its own Redis entry lives.
func TestConcurrentGetsEachReadTheirOwnEntry(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{Local: true})
	runLocal(t, c)
	type want struct {
		hash  string
		st    Status
		token string
	}
	var wants []want
	for i := range 60 {
		w := want{hash: newHash()}
		switch i % 3 {
		case 0:
			e := accountEntry()
			e.TokenID = "token-" + strconv.Itoa(i)
			if err := c.Fill(ctx, w.hash, e); err != nil {
				t.Fatal(err)
			}
			c.local.evict(w.hash) // read from Redis, not from the fill's local copy
			w.st, w.token = Hit, e.TokenID
		case 1:
			// A tombstone written directly: a revocation's stream event would reach the local layer at some point during
			// the reads, and a read that began before it rightly keeps nothing.
			if err := rdb.Set(ctx, redisKey(w.hash), tombstone, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			w.st = Invalid
		default:
			w.st = Miss
		}
		wants = append(wants, w)
	}
	var wg sync.WaitGroup
	for _, w := range wants {
		wg.Go(func() {
			e, st, err := c.Get(ctx, w.hash)
			if err != nil || st != w.st || (st == Hit && e.TokenID != w.token) {
				t.Errorf("Get %s: %v %q, %v; want %v %q", w.hash[:8], st, e.TokenID, err, w.st, w.token)
			}
		})
	}
	wg.Wait()
	for _, w := range wants {
		if w.st != Hit {
			continue
		}
		if _, ok := c.local.get(w.hash, time.Now()); !ok {
			t.Fatalf("hit %s not kept in the local layer", w.hash[:8])
		}
	}
}

// A fill waits for a round trip of reads and rides it, written before the reads: a Get of the same hash made while the
// fill waits finds the entry, and the fill is stored (its local copy too).
func TestAFillRidesTheNextRead(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	c := New(rdb, Options{TTL: time.Minute, Local: true})
	runLocal(t, c)
	c.fillWait = time.Hour // only a read can take the fill out
	h, e := newHash(), accountEntry()
	filled := make(chan error, 1)
	go func() { filled <- c.Fill(ctx, h, e) }()
	testenv.Eventually(t, 5*time.Second, "the fill queued", func() bool { return c.trips.Waiting() == 1 })
	if n, err := rdb.Exists(ctx, redisKey(h)).Result(); err != nil || n != 0 {
		t.Fatalf("entry written before any read: %d, %v", n, err)
	}
	got, st, err := c.Get(ctx, h)
	if err != nil || st != Hit || got.TokenID != e.TokenID {
		t.Fatalf("Get while the fill waits: %v %+v, %v; want the filled entry", st, got, err)
	}
	if err := <-filled; err != nil {
		t.Fatalf("Fill: %v", err)
	}
	ttl, err := rdb.PTTL(ctx, redisKey(h)).Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("filled entry's TTL %v, %v; want within the cache TTL", ttl, err)
	}
	if _, ok := c.local.get(h, time.Now()); !ok {
		t.Fatal("the stored fill is not in the local layer")
	}
}
