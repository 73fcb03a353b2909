package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

func revokedSince(t *testing.T, st tokens.Store, since time.Time) []tokens.RevokedHash {
	t.Helper()
	got, err := st.RevokedSince(context.Background(), since)
	if err != nil {
		t.Fatalf("RevokedSince(%v): %v", since, err)
	}
	return got
}

func lookupRevoked(t *testing.T, st tokens.Store, hash string) tokens.RevokedHash {
	t.Helper()
	r, err := st.LookupRevoked(context.Background(), hash)
	if err != nil {
		t.Fatalf("LookupRevoked: %v", err)
	}
	return r
}

func wantNotRevoked(t *testing.T, st tokens.Store, hash string) {
	t.Helper()
	if r, err := st.LookupRevoked(context.Background(), hash); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("LookupRevoked = %+v, %v; want ErrNotFound", r, err)
	}
}

func hashesOf(list []tokens.RevokedHash) []string {
	out := make([]string, len(list))
	for i, r := range list {
		out[i] = r.Hash
	}
	return out
}

// testRevokedSinceRecordsEveryWayOut: revocation, rotation and hard-expire each record the hash they took out of service,
// with the token id, the instant given to the call and the reason; live hashes are never listed.
func testRevokedSinceRecordsEveryWayOut(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	revokedReq := mintReq(t, alice, "laptop", base)
	revoked := mint(t, st, revokedReq)
	rotatedReq := mintReq(t, alice, "desktop", base)
	rotated := mint(t, st, rotatedReq)
	expiredReq := mintReq(t, aliceExt, "laptop", base.Add(-ttl))
	expired := mint(t, st, expiredReq)
	liveReq := mintReq(t, bob, "laptop", base)
	mint(t, st, liveReq)
	if got := revokedSince(t, st, base.Add(-2*ttl)); len(got) != 0 {
		t.Fatalf("records before any revocation: %+v", got)
	}

	t1, t2, t3 := base.Add(time.Minute), base.Add(2*time.Minute), base.Add(3*time.Minute)
	if _, err := st.Revoke(ctx, alice, revoked.Token.ID, t1); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	newReq := mintReq(t, alice, "desktop", t2)
	if m := mint(t, st, newReq); m.RotatedHash != rotatedReq.TokenHash {
		t.Fatalf("rotation replaced %q, want %q", m.RotatedHash, rotatedReq.TokenHash)
	}
	if hit, err := st.HardExpire(ctx, expired.Token.ID, t3); err != nil || !hit {
		t.Fatalf("HardExpire = %v, %v; want a hit", hit, err)
	}

	want := []tokens.RevokedHash{
		{Hash: revokedReq.TokenHash, TokenID: revoked.Token.ID, RevokedAt: t1, Reason: tokens.ReasonRevoked},
		{Hash: rotatedReq.TokenHash, TokenID: rotated.Token.ID, RevokedAt: t2, Reason: tokens.ReasonRotated},
		{Hash: expiredReq.TokenHash, TokenID: expired.Token.ID, RevokedAt: t3, Reason: tokens.ReasonExpired},
	}
	got := revokedSince(t, st, base)
	if len(got) != len(want) {
		t.Fatalf("RevokedSince = %v, want %v (oldest first)", hashesOf(got), hashesOf(want))
	}
	for i := range want {
		sameRecord(t, got[i], want[i])
		sameRecord(t, lookupRevoked(t, st, want[i].Hash), want[i])
	}
	for _, live := range []string{liveReq.TokenHash, newReq.TokenHash} {
		wantNotRevoked(t, st, live)
	}
	wantNotRevoked(t, st, newHash(t))
	// The record keeps the hash the row no longer has, and the instant agrees with the row's revoked_at.
	row, err := st.Revoke(ctx, alice, rotated.Token.ID, t3)
	if err != nil || row.TokenHash != newReq.TokenHash {
		t.Fatalf("Revoke of the rotated row = %+v, %v", row, err)
	}
	got = revokedSince(t, st, t3)
	if len(got) != 2 || !slices.Contains(hashesOf(got), expiredReq.TokenHash) || !slices.Contains(hashesOf(got), newReq.TokenHash) {
		t.Fatalf("RevokedSince(t3) = %+v, want the hard-expired and the newly revoked hash", got)
	}
}

func sameRecord(t *testing.T, got, want tokens.RevokedHash) {
	t.Helper()
	if got.Hash != want.Hash || got.TokenID != want.TokenID || got.Reason != want.Reason || !got.RevokedAt.Equal(want.RevokedAt) {
		t.Fatalf("record = %+v\nwant     %+v", got, want)
	}
}

// testRevokedSinceWindow: since is inclusive, instants compare across zones, and a caller reading a window sees only it.
func testRevokedSinceWindow(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	var hashes []string
	for i := range 4 {
		req := mintReq(t, alice, "device-"+string(rune('a'+i)), base)
		m := mint(t, st, req)
		if _, err := st.Revoke(ctx, alice, m.Token.ID, base.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, req.TokenHash)
	}
	tokyo := time.FixedZone("JST", 9*3600)
	cases := []struct {
		since time.Time
		want  []string
	}{
		{base.Add(-time.Microsecond), hashes},
		{base.In(tokyo), hashes},                       // inclusive
		{base.Add(time.Microsecond).UTC(), hashes[1:]}, // just after the first
		{base.Add(2 * time.Minute).In(tokyo), hashes[2:]},
		{base.Add(time.Hour), nil},
	}
	for _, c := range cases {
		got := hashesOf(revokedSince(t, st, c.since))
		if len(got) != len(c.want) {
			t.Fatalf("RevokedSince(%v) = %v, want %v", c.since, got, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("RevokedSince(%v) = %v, want %v (oldest first)", c.since, got, c.want)
			}
		}
	}
	if got, err := st.RevokedSince(ctx, base.Add(time.Hour)); err != nil || got == nil {
		t.Fatalf("RevokedSince past every record = %v, %v; want an empty, non-nil list", got, err)
	}
}

// testFailedChangesRecordNothing: a call that changes no row records no hash.
func testFailedChangesRecordNothing(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	req := mintReq(t, alice, "laptop", base)
	m := mint(t, st, req)
	if hit, err := st.HardExpire(ctx, m.Token.ID, base.Add(time.Hour)); err != nil || hit {
		t.Fatalf("HardExpire of a live token = %v, %v", hit, err)
	}
	if _, err := st.Revoke(ctx, bob, m.Token.ID, base); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("Revoke by another subject: %v", err)
	}
	dup := mintReq(t, bob, "laptop", base)
	dup.TokenHash = req.TokenHash
	if _, err := st.Mint(ctx, dup); !errors.Is(err, tokens.ErrConflict) {
		t.Fatalf("Mint with a taken hash: %v", err)
	}
	mint(t, st, mintReq(t, alice, "desktop", base)) // a fresh row replaces nothing
	if got := revokedSince(t, st, base.Add(-2*ttl)); len(got) != 0 {
		t.Fatalf("records after changes that took nothing out of service: %+v", got)
	}
	wantNotRevoked(t, st, req.TokenHash)
}

// testRevokeAlreadyRevoked: the owner of a dead token learns it is already revoked (a retried revocation); anyone else
// learns nothing. ErrAlreadyRevoked is also ErrNotFound, for callers that only ask for a live token.
func testRevokeAlreadyRevoked(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	if !errors.Is(tokens.ErrAlreadyRevoked, tokens.ErrNotFound) {
		t.Fatal("ErrAlreadyRevoked is not ErrNotFound")
	}
	m := mint(t, st, mintReq(t, alice, "laptop", base))
	if _, err := st.Revoke(ctx, alice, m.Token.ID, base); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Revoke(ctx, alice, upper(m.Token.ID), base.Add(time.Minute)); !errors.Is(err, tokens.ErrAlreadyRevoked) {
		t.Fatalf("second Revoke by the owner = %+v, %v; want ErrAlreadyRevoked", got, err)
	}
	for _, other := range []tokens.Subject{bob, aliceExt} {
		if _, err := st.Revoke(ctx, other, m.Token.ID, base); !errors.Is(err, tokens.ErrNotFound) ||
			errors.Is(err, tokens.ErrAlreadyRevoked) {
			t.Fatalf("Revoke of alice's dead token by %+v: %v, want plain ErrNotFound", other, err)
		}
	}
	exp := mint(t, st, mintReq(t, aliceExt, "laptop", base.Add(-ttl)))
	if hit, err := st.HardExpire(ctx, exp.Token.ID, base); err != nil || !hit {
		t.Fatalf("HardExpire = %v, %v", hit, err)
	}
	if _, err := st.Revoke(ctx, aliceExt, exp.Token.ID, base); !errors.Is(err, tokens.ErrAlreadyRevoked) {
		t.Fatalf("Revoke of a hard-expired token by its owner: %v, want ErrAlreadyRevoked", err)
	}
	if got := revokedSince(t, st, base.Add(-2*ttl)); len(got) != 2 {
		t.Fatalf("records = %+v, want one per token: a repeated revocation records nothing", got)
	}
}

// testRevokeConcurrent: of concurrent revocations of one token exactly one revokes it; the others learn it is already
// revoked, and the hash is recorded once.
func testRevokeConcurrent(t *testing.T, st tokens.Store) {
	req := mintReq(t, alice, "laptop", base)
	m := mint(t, st, req)
	const n = 10
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = st.Revoke(context.Background(), alice, m.Token.ID, base.Add(time.Duration(i)*time.Second))
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, tokens.ErrAlreadyRevoked):
			t.Fatalf("concurrent Revoke %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent revocations revoked the token, want 1", won, n)
	}
	if got := revokedSince(t, st, base); len(got) != 1 || got[0].Hash != req.TokenHash {
		t.Fatalf("records = %+v, want the one hash once", got)
	}
}

// testPruneDropsOldRevocationRecords: the retention prune removes records older than its cutoff with their rows, and keeps
// the others; the count it returns is of token rows only.
func testPruneDropsOldRevocationRecords(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	cutoff := base
	oldReq := mintReq(t, alice, "old", base.Add(-ttl))
	old := mint(t, st, oldReq)
	if _, err := st.Revoke(ctx, alice, old.Token.ID, cutoff.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	recentReq := mintReq(t, alice, "recent", base.Add(-ttl))
	recent := mint(t, st, recentReq)
	if _, err := st.Revoke(ctx, alice, recent.Token.ID, cutoff.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A record older than the cutoff whose row is still there (rotated long ago, the device in use since).
	rotatedReq := mintReq(t, bob, "laptop", cutoff.Add(-2*time.Hour))
	mint(t, st, rotatedReq)
	mint(t, st, mintReq(t, bob, "laptop", cutoff.Add(-time.Hour)))

	if n, err := st.Prune(ctx, cutoff, 1); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want the 1 old revoked row", n, err)
	}
	wantNotRevoked(t, st, oldReq.TokenHash)
	wantNotRevoked(t, st, rotatedReq.TokenHash)
	if r := lookupRevoked(t, st, recentReq.TokenHash); r.TokenID != recent.Token.ID {
		t.Fatalf("recent record = %+v", r)
	}
	if got := revokedSince(t, st, base.Add(-2*ttl)); len(got) != 1 {
		t.Fatalf("records after prune = %v, want only the recent one", hashesOf(got))
	}
}
