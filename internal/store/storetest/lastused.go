package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

func recordUses(t *testing.T, st tokens.Store, uses ...tokens.Use) int {
	t.Helper()
	n, err := st.RecordLastUsed(context.Background(), uses)
	if err != nil {
		t.Fatalf("RecordLastUsed(%d uses): %v", len(uses), err)
	}
	return n
}

func wantLastUsed(t *testing.T, st tokens.Store, hash string, want *time.Time) {
	t.Helper()
	if got := lookup(t, st, hash).LastUsedAt; !equalTimes(got, want) {
		t.Fatalf("last_used_at = %v, want %v", got, want)
	}
}

func at(t time.Time) *time.Time { return &t }

func testRecordLastUsed(t *testing.T, st tokens.Store) {
	req := mintReq(t, alice, "laptop", base)
	m := mint(t, st, req)
	wantLastUsed(t, st, req.TokenHash, nil)

	// An instant given in another zone, with nanoseconds: read back as the same instant at the stores' precision.
	first := base.Add(time.Minute + 987*time.Nanosecond).In(time.FixedZone("PST", -8*3600))
	if n := recordUses(t, st, tokens.Use{TokenID: m.Token.ID, At: first}); n != 1 {
		t.Fatalf("first use wrote %d rows, want 1", n)
	}
	wantLastUsed(t, st, req.TokenHash, at(first.Truncate(time.Microsecond)))
	live, _ := list(t, st, alice, base, 1, 10)
	if len(live) != 1 || !equalTimes(live[0].LastUsedAt, at(first.Truncate(time.Microsecond))) {
		t.Fatalf("ListLive does not show the stored last use: %+v", live)
	}

	// Only forward: an earlier or equal time changes nothing.
	for _, earlier := range []time.Time{base.Add(30 * time.Second), first} {
		if n := recordUses(t, st, tokens.Use{TokenID: m.Token.ID, At: earlier}); n != 0 {
			t.Fatalf("use at %v after one at %v wrote %d rows, want 0", earlier, first, n)
		}
	}
	wantLastUsed(t, st, req.TokenHash, at(first.Truncate(time.Microsecond)))

	// Several uses of one id in a batch count as the latest; an upper-case id is the same UUID; ids no row has are ignored.
	latest := base.Add(5 * time.Minute)
	n := recordUses(t, st,
		tokens.Use{TokenID: m.Token.ID, At: base.Add(3 * time.Minute)},
		tokens.Use{TokenID: upper(m.Token.ID), At: latest},
		tokens.Use{TokenID: m.Token.ID, At: base.Add(4 * time.Minute)},
		tokens.Use{TokenID: unknown, At: latest},
		tokens.Use{TokenID: notAUUID, At: latest},
		tokens.Use{TokenID: "", At: latest},
	)
	if n != 1 {
		t.Fatalf("batch wrote %d rows, want 1", n)
	}
	wantLastUsed(t, st, req.TokenHash, &latest)

	if n := recordUses(t, st); n != 0 {
		t.Fatalf("an empty batch wrote %d rows", n)
	}
	if n := recordUses(t, st, tokens.Use{TokenID: unknown, At: latest}); n != 0 {
		t.Fatalf("an unknown id wrote %d rows", n)
	}
}

// testRecordLastUsedBatch: one call writes every token of a large batch, each to its own time.
func testRecordLastUsedBatch(t *testing.T, st tokens.Store) {
	const devices = 40
	var uses []tokens.Use
	hashes := map[string]string{}
	want := map[string]time.Time{}
	for i := range devices {
		req := mintReq(t, alice, fmt.Sprintf("device-%d", i), base)
		m := mint(t, st, req)
		hashes[m.Token.ID] = req.TokenHash
		for j := range 25 { // 1000 uses in all, each token's latest in the middle of its list
			use := base.Add(time.Duration(i)*time.Second + time.Duration(j%13)*time.Millisecond)
			uses = append(uses, tokens.Use{TokenID: m.Token.ID, At: use})
			if use.After(want[m.Token.ID]) {
				want[m.Token.ID] = use
			}
		}
	}
	if n := recordUses(t, st, uses...); n != devices {
		t.Fatalf("a batch of %d uses of %d tokens wrote %d rows", len(uses), devices, n)
	}
	for id, hash := range hashes {
		w := want[id]
		wantLastUsed(t, st, hash, &w)
	}
}

// testRecordLastUsedNeverRevived: a use that reaches the store after its token was revoked or hard-expired writes nothing,
// whether it happened before or after the revocation.
func testRecordLastUsedNeverRevived(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	revoked := mint(t, st, mintReq(t, alice, "laptop", base))
	revokedAt := base.Add(time.Hour)
	if _, err := st.Revoke(ctx, alice, revoked.Token.ID, revokedAt); err != nil {
		t.Fatal(err)
	}
	expired := mint(t, st, mintReq(t, alice, "desktop", base))
	if hit, err := st.HardExpire(ctx, expired.Token.ID, base.Add(ttl)); err != nil || !hit {
		t.Fatalf("HardExpire = %v, %v", hit, err)
	}
	for _, id := range []string{revoked.Token.ID, expired.Token.ID} {
		for _, use := range []time.Time{base.Add(time.Minute), revokedAt.Add(time.Minute), base.Add(ttl + time.Minute)} {
			if n := recordUses(t, st, tokens.Use{TokenID: id, At: use}); n != 0 {
				t.Fatalf("a use at %v of the revoked row %s wrote %d rows", use, id, n)
			}
		}
	}
	// Retention sees the rows as they were: still revoked, and pruned on the revocation's schedule.
	if n, err := st.Prune(ctx, base.Add(ttl+time.Second), 10); err != nil || n != 2 {
		t.Fatalf("Prune after the uses = %d, %v; want both revoked rows", n, err)
	}
}

// testRecordLastUsedRotation: a rotation starts the row afresh (no last use), and a use of the replaced token that reaches
// the store after the rotation does not land on the token that replaced it.
func testRecordLastUsedRotation(t *testing.T, st tokens.Store) {
	first := mint(t, st, mintReq(t, alice, "laptop", base))
	if n := recordUses(t, st, tokens.Use{TokenID: first.Token.ID, At: base.Add(time.Minute)}); n != 1 {
		t.Fatalf("use before the rotation wrote %d rows, want 1", n)
	}
	rotatedAt := base.Add(time.Hour)
	req := mintReq(t, alice, "laptop", rotatedAt)
	second := mint(t, st, req)
	if second.Token.ID != first.Token.ID || second.Token.LastUsedAt != nil {
		t.Fatalf("rotation = %+v, want the same id with no last use", second.Token)
	}
	wantLastUsed(t, st, req.TokenHash, nil)
	// The old token's use, flushed late: before the rotation's created_at, so it belongs to the old token.
	if n := recordUses(t, st, tokens.Use{TokenID: first.Token.ID, At: rotatedAt.Add(-time.Microsecond)}); n != 0 {
		t.Fatalf("a use from before the rotation wrote %d rows to the rotated row", n)
	}
	wantLastUsed(t, st, req.TokenHash, nil)
	// A use at the rotation's own instant or later is the new token's.
	if n := recordUses(t, st, tokens.Use{TokenID: first.Token.ID, At: rotatedAt}); n != 1 {
		t.Fatalf("a use at the rotation instant wrote %d rows, want 1", n)
	}
	wantLastUsed(t, st, req.TokenHash, &rotatedAt)
	// The same rule on a fresh row: a use stamped before its creation is not its use.
	fresh := mintReq(t, bob, "laptop", base)
	f := mint(t, st, fresh)
	if n := recordUses(t, st, tokens.Use{TokenID: f.Token.ID, At: base.Add(-time.Second)}); n != 0 {
		t.Fatalf("a use before the row was created wrote %d rows", n)
	}
	wantLastUsed(t, st, fresh.TokenHash, nil)
}
