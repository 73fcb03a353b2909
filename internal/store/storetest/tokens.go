// Package storetest is the conformance suite every tokens.Store and directory.Directory adapter runs (in the spirit of dex's
// storage/conformance), so the in-memory store used in dev behaves exactly like Postgres.
package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

// RunTokenStore runs the token store conformance suite. newStore must return an empty store; it is called once per subtest.
func RunTokenStore(t *testing.T, newStore func(t *testing.T) tokens.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s tokens.Store)
	}{
		{"MintThenLookup", testMintThenLookup},
		{"MintRotatesInPlace", testMintRotatesInPlace},
		{"MintKeepsDevicesApart", testMintKeepsDevicesApart},
		{"MintConcurrentSameDevice", testMintConcurrentSameDevice},
		{"MintRejectsTakenHash", testMintRejectsTakenHash},
		{"MintRejectsInvalidRequests", testMintRejectsInvalidRequests},
		{"ExternalEmailIsCaseInsensitive", testExternalEmailIsCaseInsensitive},
		{"ExternalEmailFoldsASCIIOnly", testExternalEmailFoldsASCIIOnly},
		{"CaseVariantAccountsKeepTheirTokens", testCaseVariantAccountsKeepTheirTokens},
		{"AccountRowFollowsItsEmail", testAccountRowFollowsItsEmail},
		{"MintRejectsUnsafeEmails", testMintRejectsUnsafeEmails},
		{"HardExpire", testHardExpire},
		{"HardExpireConcurrent", testHardExpireConcurrent},
		{"HardExpiredDeviceMintsFreshRow", testHardExpiredDeviceMintsFreshRow},
		{"RevokeByOwner", testRevokeByOwner},
		{"RevokeOtherSubjectNotFound", testRevokeOtherSubjectNotFound},
		{"ListLive", testListLive},
		{"ListLiveRejectsBadPage", testListLiveRejectsBadPage},
		{"Prune", testPrune},
		{"RevokedSinceRecordsEveryWayOut", testRevokedSinceRecordsEveryWayOut},
		{"RevokedSinceWindow", testRevokedSinceWindow},
		{"FailedChangesRecordNothing", testFailedChangesRecordNothing},
		{"RevokeAlreadyRevoked", testRevokeAlreadyRevoked},
		{"RevokeConcurrent", testRevokeConcurrent},
		{"PruneDropsOldRevocationRecords", testPruneDropsOldRevocationRecords},
		{"TimesAreInstants", testTimesAreInstants},
		{"RecordLastUsed", testRecordLastUsed},
		{"RecordLastUsedBatch", testRecordLastUsedBatch},
		{"RecordLastUsedNeverRevived", testRecordLastUsedNeverRevived},
		{"RecordLastUsedRotation", testRecordLastUsedRotation},
		{"HonoursContext", testHonoursContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore(t)) })
	}
}

// base is the suite's clock: mid-day with a microsecond part, in a zone that is not UTC.
var base = time.Date(2026, 11, 27, 12, 0, 0, 123456000, time.FixedZone("IST", 5*3600+1800))

const (
	aliceID  = "0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01"
	bobID    = "1c7a4b5f-9d2e-4f30-8b4c-6d7e8f9a0b12"
	idpA     = "https://idp-a.example.com"
	idpB     = "https://idp-b.example.com"
	client   = "difyctl"
	ttl      = 14 * 24 * time.Hour
	unknown  = "7f1e2d3c-4b5a-4968-8776-655443322110"
	notAUUID = "not-a-uuid"
)

var (
	alice    = tokens.AccountSubject(aliceID, "alice@example.com")
	bob      = tokens.AccountSubject(bobID, "bob@example.com")
	aliceExt = tokens.ExternalSubject("alice@example.com", idpA) // same email as the account alice
)

// newHash returns a fresh token hash, as deviceflow computes it.
func newHash(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return tokens.Hash(fmt.Sprintf("%x", b))
}

func mintReq(t *testing.T, s tokens.Subject, device string, now time.Time) tokens.MintRequest {
	t.Helper()
	kind, ok := tokens.KindForSubject(s.Type)
	if !ok {
		t.Fatalf("no kind for subject type %q", s.Type)
	}
	return tokens.MintRequest{Subject: s, ClientID: client, DeviceLabel: device, Prefix: kind.Prefix,
		TokenHash: newHash(t), Now: now, ExpiresAt: now.Add(ttl)}
}

func mint(t *testing.T, st tokens.Store, req tokens.MintRequest) tokens.Minted {
	t.Helper()
	m, err := st.Mint(context.Background(), req)
	if err != nil {
		t.Fatalf("Mint(%s, %s): %v", req.Subject.Email, req.DeviceLabel, err)
	}
	return m
}

func lookup(t *testing.T, st tokens.Store, hash string) tokens.Token {
	t.Helper()
	tok, err := st.LookupByHash(context.Background(), hash)
	if err != nil {
		t.Fatalf("LookupByHash: %v", err)
	}
	return tok
}

func wantNotFound(t *testing.T, st tokens.Store, hash string) {
	t.Helper()
	if tok, err := st.LookupByHash(context.Background(), hash); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("LookupByHash = %+v, %v; want ErrNotFound", tok, err)
	}
}

func list(t *testing.T, st tokens.Store, s tokens.Subject, now time.Time, page, limit int) ([]tokens.Token, int) {
	t.Helper()
	got, total, err := st.ListLive(context.Background(), s, now, tokens.Page{Page: page, Limit: limit})
	if err != nil {
		t.Fatalf("ListLive: %v", err)
	}
	return got, total
}

// sameToken compares rows field by field, times as instants.
func sameToken(t *testing.T, got, want tokens.Token) {
	t.Helper()
	if got.ID != want.ID || got.SubjectEmail != want.SubjectEmail || got.SubjectIssuer != want.SubjectIssuer ||
		got.AccountID != want.AccountID || got.ClientID != want.ClientID || got.DeviceLabel != want.DeviceLabel ||
		got.Prefix != want.Prefix || got.TokenHash != want.TokenHash {
		t.Fatalf("token = %+v\nwant    %+v", got, want)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		!equalTimes(got.LastUsedAt, want.LastUsedAt) || !equalTimes(got.RevokedAt, want.RevokedAt) {
		t.Fatalf("token times = created %v expires %v last used %v revoked %v\nwant created %v expires %v last used %v revoked %v",
			got.CreatedAt, got.ExpiresAt, got.LastUsedAt, got.RevokedAt,
			want.CreatedAt, want.ExpiresAt, want.LastUsedAt, want.RevokedAt)
	}
}

func equalTimes(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func testMintThenLookup(t *testing.T, st tokens.Store) {
	req := mintReq(t, alice, "laptop", base)
	m := mint(t, st, req)
	if m.RotatedHash != "" {
		t.Fatalf("first mint RotatedHash = %q, want empty", m.RotatedHash)
	}
	want := tokens.Token{ID: m.Token.ID, SubjectEmail: "alice@example.com", SubjectIssuer: tokens.AccountIssuer,
		AccountID: aliceID, ClientID: client, DeviceLabel: "laptop", Prefix: "dfoa_", TokenHash: req.TokenHash,
		CreatedAt: base, ExpiresAt: base.Add(ttl)}
	sameToken(t, m.Token, want)
	if len(m.Token.ID) != 36 {
		t.Fatalf("id %q is not a UUID", m.Token.ID)
	}
	sameToken(t, lookup(t, st, req.TokenHash), want)

	ext := mintReq(t, aliceExt, "laptop", base)
	e := mint(t, st, ext)
	if e.Token.AccountID != "" || e.Token.SubjectIssuer != idpA || e.Token.Prefix != "dfoe_" || e.Token.ID == m.Token.ID {
		t.Fatalf("external token = %+v", e.Token)
	}
	if got := lookup(t, st, ext.TokenHash).Subject(); got != aliceExt {
		t.Fatalf("external token subject = %+v, want %+v", got, aliceExt)
	}
	wantNotFound(t, st, newHash(t))
}

func testMintRotatesInPlace(t *testing.T, st tokens.Store) {
	first := mint(t, st, mintReq(t, alice, "laptop", base))
	later := base.Add(time.Hour)
	req := mintReq(t, alice, "laptop", later)
	second := mint(t, st, req)
	if second.Token.ID != first.Token.ID {
		t.Fatalf("rotation changed the id: %s -> %s", first.Token.ID, second.Token.ID)
	}
	if second.RotatedHash != first.Token.TokenHash {
		t.Fatalf("RotatedHash = %q, want the replaced %q", second.RotatedHash, first.Token.TokenHash)
	}
	wantNotFound(t, st, first.Token.TokenHash)
	got := lookup(t, st, req.TokenHash)
	if got.ID != first.Token.ID || !got.CreatedAt.Equal(later) || !got.ExpiresAt.Equal(later.Add(ttl)) {
		t.Fatalf("rotated row = %+v, want id %s created %v expires %v", got, first.Token.ID, later, later.Add(ttl))
	}
	if _, total := list(t, st, alice, later, 1, 10); total != 1 {
		t.Fatalf("live tokens after rotation = %d, want 1", total)
	}
	third := mint(t, st, mintReq(t, alice, "laptop", later.Add(time.Hour)))
	if third.RotatedHash != req.TokenHash || third.Token.ID != first.Token.ID {
		t.Fatalf("second rotation = %+v, want RotatedHash %q on id %s", third, req.TokenHash, first.Token.ID)
	}
	wantNotFound(t, st, req.TokenHash)
}

func testMintKeepsDevicesApart(t *testing.T, st tokens.Store) {
	laptop := mint(t, st, mintReq(t, alice, "laptop", base))
	others := []tokens.MintRequest{
		mintReq(t, alice, "desktop", base),                                            // other device label
		mintReq(t, aliceExt, "laptop", base),                                          // same email, other issuer (external)
		mintReq(t, bob, "laptop", base),                                               // other subject
		mintReq(t, tokens.ExternalSubject("alice@example.com", idpB), "laptop", base), // other IdP
	}
	otherClient := mintReq(t, alice, "laptop", base)
	otherClient.ClientID = "other-cli"
	others = append(others, otherClient)
	ids := map[string]bool{laptop.Token.ID: true}
	for _, req := range others {
		m := mint(t, st, req)
		if m.RotatedHash != "" || ids[m.Token.ID] {
			t.Fatalf("mint for %+v/%s/%s rotated another device's row: %+v", req.Subject, req.ClientID, req.DeviceLabel, m)
		}
		ids[m.Token.ID] = true
	}
	lookup(t, st, laptop.Token.TokenHash)
	if _, total := list(t, st, alice, base, 1, 10); total != 3 {
		t.Fatalf("alice's live tokens = %d, want 3 (laptop, desktop, other client)", total)
	}
}

func testMintConcurrentSameDevice(t *testing.T, st tokens.Store) {
	// Concurrent lookups first, so a pooled store has its connections open and the mints below really start together:
	// every round's first mints then race to insert the device's row.
	var warm sync.WaitGroup
	for range 20 {
		warm.Go(func() { _, _ = st.LookupByHash(context.Background(), newHash(t)) })
	}
	warm.Wait()
	for round := range 5 {
		mintConcurrently(t, st, fmt.Sprintf("laptop-%d", round))
	}
}

// mintConcurrently runs 20 mints of one device at once and checks they all succeed and leave one live row.
func mintConcurrently(t *testing.T, st tokens.Store, device string) {
	t.Helper()
	const n = 20
	reqs := make([]tokens.MintRequest, n)
	for i := range reqs {
		reqs[i] = mintReq(t, alice, device, base.Add(time.Duration(i)*time.Second))
	}
	results := make([]tokens.Minted, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() {
			<-start
			results[i], errs[i] = st.Mint(context.Background(), reqs[i])
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: mint %d of %d concurrent: %v", device, i, n, err)
		}
	}
	var live []tokens.Token
	all, _ := list(t, st, alice, base, 1, 100)
	for _, tok := range all {
		if tok.DeviceLabel == device {
			live = append(live, tok)
		}
	}
	if len(live) != 1 {
		t.Fatalf("%s: live rows after %d concurrent mints = %d, want 1", device, n, len(live))
	}
	// The mints form one chain: one created the row, each other replaced exactly the hash its predecessor wrote, and the
	// last hash written is the one that resolves.
	fresh := 0
	replaced := map[string]int{}
	for _, m := range results {
		if m.Token.ID != live[0].ID {
			t.Fatalf("%s: mint returned id %s, the live row is %s", device, m.Token.ID, live[0].ID)
		}
		if m.RotatedHash == "" {
			fresh++
		} else {
			replaced[m.RotatedHash]++
		}
	}
	if fresh != 1 {
		t.Fatalf("%s: %d mints created the row, want exactly 1", device, fresh)
	}
	for _, req := range reqs {
		h := req.TokenHash
		switch {
		case h == live[0].TokenHash:
			if replaced[h] != 0 {
				t.Fatalf("%s: the live hash is reported as replaced", device)
			}
		case replaced[h] != 1:
			t.Fatalf("%s: a hash was replaced %d times, want exactly once", device, replaced[h])
		default:
			wantNotFound(t, st, h)
			// Every replaced hash is recorded, so caches still holding it can be told.
			if r := lookupRevoked(t, st, h); r.TokenID != live[0].ID || r.Reason != tokens.ReasonRotated {
				t.Fatalf("%s: record of a replaced hash = %+v, want token %s rotated", device, r, live[0].ID)
			}
		}
	}
	lookup(t, st, live[0].TokenHash)
	wantNotRevoked(t, st, live[0].TokenHash)
}

func testMintRejectsTakenHash(t *testing.T, st tokens.Store) {
	first := mintReq(t, alice, "laptop", base)
	mint(t, st, first)
	dup := mintReq(t, bob, "laptop", base)
	dup.TokenHash = first.TokenHash
	if _, err := st.Mint(context.Background(), dup); !errors.Is(err, tokens.ErrConflict) {
		t.Fatalf("mint with a hash already in use: err = %v, want ErrConflict", err)
	}
	if got := lookup(t, st, first.TokenHash); got.AccountID != aliceID {
		t.Fatalf("the hash now resolves to %+v", got)
	}
	if _, total := list(t, st, bob, base, 1, 10); total != 0 {
		t.Fatalf("the refused mint left %d rows for bob", total)
	}
}

func testMintRejectsInvalidRequests(t *testing.T, st tokens.Store) {
	cases := map[string]func(r *tokens.MintRequest){
		"empty issuer":            func(r *tokens.MintRequest) { r.Subject.Issuer = "" },
		"empty email":             func(r *tokens.MintRequest) { r.Subject.Email = "" },
		"empty client":            func(r *tokens.MintRequest) { r.ClientID = "" },
		"empty device label":      func(r *tokens.MintRequest) { r.DeviceLabel = "" },
		"account without id":      func(r *tokens.MintRequest) { r.Subject.AccountID = "" },
		"account id not a UUID":   func(r *tokens.MintRequest) { r.Subject.AccountID = notAUUID },
		"unknown prefix":          func(r *tokens.MintRequest) { r.Prefix = "app-" },
		"prefix of other subject": func(r *tokens.MintRequest) { r.Prefix = tokens.ExternalSSO.Prefix },
		"hash not hex sha256":     func(r *tokens.MintRequest) { r.TokenHash = "dfoa_plaintext" },
		"expiry not after now":    func(r *tokens.MintRequest) { r.ExpiresAt = r.Now },
	}
	for name, mutate := range cases {
		req := mintReq(t, alice, "laptop", base)
		mutate(&req)
		if m, err := st.Mint(context.Background(), req); err == nil {
			t.Errorf("%s: Mint accepted it: %+v", name, m)
		}
	}
	ext := mintReq(t, aliceExt, "laptop", base)
	ext.Subject.AccountID = aliceID
	if _, err := st.Mint(context.Background(), ext); err == nil {
		t.Errorf("external subject with an account id: Mint accepted it")
	}
	if _, total := list(t, st, alice, base, 1, 10); total != 0 {
		t.Fatalf("refused mints left %d rows", total)
	}
}

func testExternalEmailIsCaseInsensitive(t *testing.T, st tokens.Store) {
	shouting := tokens.Subject{Type: tokens.SubjectExternalSSO, Email: "Carol@Example.COM", Issuer: idpA}
	quiet := tokens.Subject{Type: tokens.SubjectExternalSSO, Email: "carol@example.com", Issuer: idpA}
	first := mint(t, st, mintReq(t, shouting, "laptop", base))
	if first.Token.SubjectEmail != "carol@example.com" {
		t.Fatalf("stored email = %q, want it lower-cased", first.Token.SubjectEmail)
	}
	second := mint(t, st, mintReq(t, quiet, "laptop", base.Add(time.Minute)))
	if second.Token.ID != first.Token.ID || second.RotatedHash != first.Token.TokenHash {
		t.Fatalf("a mint differing only in email case did not rotate the row: %+v", second)
	}
	if _, total := list(t, st, shouting, base, 1, 10); total != 1 {
		t.Fatalf("listing with another email case: total = %d, want 1", total)
	}
	if _, err := st.Revoke(context.Background(), shouting, second.Token.ID, base); err != nil {
		t.Fatalf("revoke with another email case: %v", err)
	}
	wantNotFound(t, st, second.Token.TokenHash)
}

func testHardExpire(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	req := mintReq(t, alice, "laptop", base)
	m := mint(t, st, req)
	if hit, err := st.HardExpire(ctx, m.Token.ID, base.Add(ttl-time.Second)); err != nil || hit {
		t.Fatalf("HardExpire before expiry = %v, %v; want false (the CAS only takes expired rows)", hit, err)
	}
	lookup(t, st, req.TokenHash)

	after := base.Add(ttl + time.Second)
	if got := lookup(t, st, req.TokenHash); !got.Expired(after) {
		t.Fatalf("token not expired at %v: %+v", after, got)
	}
	if hit, err := st.HardExpire(ctx, m.Token.ID, after); err != nil || !hit {
		t.Fatalf("HardExpire = %v, %v; want hit", hit, err)
	}
	wantNotFound(t, st, req.TokenHash)
	if hit, err := st.HardExpire(ctx, m.Token.ID, after); err != nil || hit {
		t.Fatalf("second HardExpire = %v, %v; want no hit", hit, err)
	}
	for _, id := range []string{unknown, notAUUID, ""} {
		if hit, err := st.HardExpire(ctx, id, after); err != nil || hit {
			t.Fatalf("HardExpire(%q) = %v, %v; want false, nil", id, hit, err)
		}
	}
	// Exactly at the expiry instant the token is expired (Token.Expired) and the CAS agrees.
	edge := mint(t, st, mintReq(t, alice, "desktop", base))
	if hit, err := st.HardExpire(ctx, edge.Token.ID, edge.Token.ExpiresAt); err != nil || !hit {
		t.Fatalf("HardExpire at the expiry instant = %v, %v; want hit", hit, err)
	}
}

func testHardExpireConcurrent(t *testing.T, st tokens.Store) {
	m := mint(t, st, mintReq(t, alice, "laptop", base))
	after := base.Add(ttl + time.Minute)
	const n = 20
	hits := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { hits[i], errs[i] = st.HardExpire(context.Background(), m.Token.ID, after) })
	}
	wg.Wait()
	count := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("HardExpire %d: %v", i, errs[i])
		}
		if hits[i] {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d of %d concurrent hard-expires hit, want exactly 1", count, n)
	}
	wantNotFound(t, st, m.Token.TokenHash)
}

func testHardExpiredDeviceMintsFreshRow(t *testing.T, st tokens.Store) {
	old := mint(t, st, mintReq(t, alice, "laptop", base))
	after := base.Add(ttl + time.Second)
	if hit, err := st.HardExpire(context.Background(), old.Token.ID, after); err != nil || !hit {
		t.Fatalf("HardExpire = %v, %v", hit, err)
	}
	fresh := mint(t, st, mintReq(t, alice, "laptop", after))
	if fresh.Token.ID == old.Token.ID || fresh.RotatedHash != "" {
		t.Fatalf("mint after hard-expire = %+v; want a new row (the revoked one keeps its id) and nothing rotated", fresh)
	}
}

func testRevokeByOwner(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	req := mintReq(t, alice, "laptop", base)
	m := mint(t, st, req)
	keep := mint(t, st, mintReq(t, alice, "desktop", base))
	at := base.Add(time.Hour)
	got, err := st.Revoke(ctx, alice, m.Token.ID, at)
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	sameToken(t, got, m.Token) // as it was before: with its hash, for the tombstone
	wantNotFound(t, st, req.TokenHash)
	if _, err := st.Revoke(ctx, alice, m.Token.ID, at); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("second Revoke: err = %v, want ErrNotFound", err)
	}
	live, total := list(t, st, alice, at, 1, 10)
	if total != 1 || live[0].ID != keep.Token.ID {
		t.Fatalf("live after revoke = %d %+v, want only the desktop token", total, live)
	}

	ext := mint(t, st, mintReq(t, aliceExt, "laptop", base))
	if got, err := st.Revoke(ctx, aliceExt, ext.Token.ID, at); err != nil || got.TokenHash != ext.Token.TokenHash {
		t.Fatalf("external Revoke = %+v, %v", got, err)
	}
	// An id in upper case is the same UUID.
	up := mint(t, st, mintReq(t, alice, "tablet", base))
	if _, err := st.Revoke(ctx, alice, upper(up.Token.ID), at); err != nil {
		t.Fatalf("Revoke with an upper-case id: %v", err)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func testRevokeOtherSubjectNotFound(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	acct := mint(t, st, mintReq(t, alice, "laptop", base))
	ext := mint(t, st, mintReq(t, aliceExt, "laptop", base))
	attempts := []struct {
		name string
		s    tokens.Subject
		id   string
	}{
		{"another account", bob, acct.Token.ID},
		{"external subject with the account's email", aliceExt, acct.Token.ID},
		{"external subject with the account's email and issuer", tokens.Subject{Type: tokens.SubjectExternalSSO,
			Email: "alice@example.com", Issuer: tokens.AccountIssuer}, acct.Token.ID},
		{"account with the external subject's email", alice, ext.Token.ID},
		{"same email, other IdP", tokens.ExternalSubject("alice@example.com", idpB), ext.Token.ID},
		{"account subject without an id", tokens.Subject{Type: tokens.SubjectAccount, Email: "alice@example.com",
			Issuer: tokens.AccountIssuer}, acct.Token.ID},
		{"subject of no known type", tokens.Subject{Email: "alice@example.com", Issuer: idpA}, ext.Token.ID},
		{"unknown id", alice, unknown},
		{"id not a UUID", alice, notAUUID},
		{"empty id", alice, ""},
	}
	for _, a := range attempts {
		if got, err := st.Revoke(ctx, a.s, a.id, base); !errors.Is(err, tokens.ErrNotFound) {
			t.Errorf("%s: Revoke = %+v, %v; want ErrNotFound", a.name, got, err)
		}
	}
	lookup(t, st, acct.Token.TokenHash)
	lookup(t, st, ext.Token.TokenHash)
}

func testListLive(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	var want []tokens.Token // newest first
	for i := range 5 {
		m := mint(t, st, mintReq(t, alice, fmt.Sprintf("device-%d", i), base.Add(time.Duration(i)*time.Minute)))
		want = append([]tokens.Token{m.Token}, want...)
	}
	revoked := mint(t, st, mintReq(t, alice, "revoked", base.Add(time.Hour)))
	if _, err := st.Revoke(ctx, alice, revoked.Token.ID, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	expiring := mintReq(t, alice, "short-lived", base.Add(-ttl))
	expiring.ExpiresAt = base.Add(time.Minute) // expired at the listing time below
	mint(t, st, expiring)
	mint(t, st, mintReq(t, aliceExt, "laptop", base)) // same email, other subject
	mint(t, st, mintReq(t, bob, "laptop", base))

	now := base.Add(2 * time.Hour)
	var all []tokens.Token
	for page := 1; page <= 3; page++ {
		got, total := list(t, st, alice, now, page, 2)
		if total != 5 {
			t.Fatalf("page %d: total = %d, want 5", page, total)
		}
		all = append(all, got...)
	}
	if len(all) != len(want) {
		t.Fatalf("pages held %d tokens, want %d", len(all), len(want))
	}
	for i := range want {
		sameToken(t, all[i], want[i])
	}
	if got, total := list(t, st, alice, now, 4, 2); len(got) != 0 || total != 5 {
		t.Fatalf("page past the end = %d tokens, total %d; want none, 5", len(got), total)
	}
	if got, total := list(t, st, alice, now, 1<<40, 100); len(got) != 0 || total != 5 {
		t.Fatalf("page far past the end = %d tokens, total %d; want none, 5", len(got), total)
	}
	if got, total := list(t, st, aliceExt, now, 1, 10); total != 1 || got[0].AccountID != "" {
		t.Fatalf("external alice's list = %+v (total %d), want her one token", got, total)
	}
	if got, total := list(t, st, tokens.AccountSubject(unknown, "nobody@example.com"), now, 1, 10); total != 0 ||
		got == nil || len(got) != 0 {
		t.Fatalf("a subject without tokens: %v (total %d), want an empty, non-nil list", got, total)
	}
	// Tied creation times are ordered by id, so pages never overlap.
	for i := range 3 {
		mint(t, st, mintReq(t, bob, fmt.Sprintf("tied-%d", i), base))
	}
	p1, _ := list(t, st, bob, now, 1, 2)
	p2, total := list(t, st, bob, now, 2, 2)
	if total != 4 || len(p1) != 2 || len(p2) != 2 || p1[1].ID <= p2[0].ID || p1[0].ID <= p1[1].ID || p2[0].ID <= p2[1].ID {
		t.Fatalf("tied tokens not in descending id order across pages: %v %v", ids(p1), ids(p2))
	}
}

func ids(list []tokens.Token) []string {
	out := make([]string, len(list))
	for i, t := range list {
		out[i] = t.ID
	}
	return out
}

func testListLiveRejectsBadPage(t *testing.T, st tokens.Store) {
	for _, p := range []tokens.Page{{Page: 0, Limit: 10}, {Page: 1, Limit: 0}, {Page: -1, Limit: 10}, {Page: 1, Limit: -5}} {
		if _, _, err := st.ListLive(context.Background(), alice, base, p); err == nil {
			t.Errorf("ListLive(%+v) accepted it", p)
		}
	}
}

func testPrune(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	cutoff := base
	before, after := cutoff.Add(-time.Hour), cutoff.Add(time.Hour)

	// revokedAt == nil means never revoked.
	rows := []struct {
		device     string
		expiresAt  time.Time
		revokedAt  *time.Time
		wantPruned bool
	}{
		{"revoked before cutoff", after.Add(ttl), &before, true}, // rule 1, whatever the expiry
		{"revoked before cutoff, expired", before, &before, true},
		{"revoked after cutoff, expired before", before, &after, false}, // rule 2 only covers unrevoked rows
		{"revoked after cutoff", after.Add(ttl), &after, false},
		{"unrevoked, expired before cutoff", before, nil, true},
		{"unrevoked, expired after cutoff", after, nil, false},
		{"unrevoked, expires at cutoff", cutoff, nil, false}, // strictly before the cutoff only
		{"live", after.Add(ttl), nil, false},
	}
	for i := range 3 { // more deletable rows than one batch
		rows = append(rows, struct {
			device     string
			expiresAt  time.Time
			revokedAt  *time.Time
			wantPruned bool
		}{fmt.Sprintf("old %d", i), before.Add(-time.Duration(i) * time.Hour), nil, true})
	}
	wantPruned, wantKept := 0, 0
	for _, r := range rows {
		req := mintReq(t, alice, r.device, r.expiresAt.Add(-ttl))
		req.ExpiresAt = r.expiresAt
		m := mint(t, st, req)
		if r.revokedAt != nil {
			if _, err := st.Revoke(ctx, alice, m.Token.ID, *r.revokedAt); err != nil {
				t.Fatalf("%s: revoke: %v", r.device, err)
			}
		}
		if r.wantPruned {
			wantPruned++
		} else {
			wantKept++
		}
	}
	deleted, err := st.Prune(ctx, cutoff, 2)
	if err != nil || deleted != wantPruned {
		t.Fatalf("Prune = %d, %v; want %d", deleted, err, wantPruned)
	}
	if deleted, err := st.Prune(ctx, cutoff, 2); err != nil || deleted != 0 {
		t.Fatalf("second Prune = %d, %v; want 0", deleted, err)
	}
	live, total := list(t, st, alice, base, 1, 100)
	if total != 2 {
		t.Fatalf("live tokens after prune = %d %v, want the 2 unexpired, unrevoked ones", total, ids(live))
	}
	// Everything that is left goes with a cutoff past every row: exactly the rows the first prune kept.
	if deleted, err := st.Prune(ctx, after.Add(2*ttl), 100); err != nil || deleted != wantKept {
		t.Fatalf("Prune of the rest = %d, %v; want %d", deleted, err, wantKept)
	}
	if _, err := st.Prune(ctx, cutoff, 0); err == nil {
		t.Fatalf("Prune with batch size 0 accepted it")
	}
}

func testTimesAreInstants(t *testing.T, st tokens.Store) {
	tokyo := time.FixedZone("JST", 9*3600)
	denver := time.FixedZone("MST", -7*3600)
	now := time.Date(2026, 11, 28, 3, 4, 5, 678912000, tokyo)
	expires := now.Add(ttl).In(denver)
	req := mintReq(t, alice, "laptop", now)
	req.ExpiresAt = expires
	m := mint(t, st, req)
	got := lookup(t, st, req.TokenHash)
	if !got.CreatedAt.Equal(now) || !got.ExpiresAt.Equal(expires) || !m.Token.CreatedAt.Equal(now) {
		t.Fatalf("times read back created %v expires %v; want instants %v and %v", got.CreatedAt, got.ExpiresAt, now, expires)
	}
	// The same instant seen from UTC: one microsecond before expiry the token is live, at expiry it is not.
	live, _ := list(t, st, alice, expires.UTC().Add(-time.Microsecond), 1, 10)
	gone, _ := list(t, st, alice, expires.UTC(), 1, 10)
	if len(live) != 1 || len(gone) != 0 {
		t.Fatalf("listing around the expiry instant: %d then %d tokens, want 1 then 0", len(live), len(gone))
	}
	revokedAt := now.Add(time.Hour).In(denver)
	revoked, err := st.Revoke(context.Background(), alice, m.Token.ID, revokedAt)
	if err != nil {
		t.Fatal(err)
	}
	if revoked.RevokedAt != nil {
		t.Fatalf("Revoke returned the row after the update (revoked_at %v), want it as it was before", revoked.RevokedAt)
	}
	// A prune cutoff one microsecond after the revocation instant, given in a third zone, takes the row.
	if n, err := st.Prune(context.Background(), revokedAt.UTC().Add(time.Microsecond), 10); err != nil || n != 1 {
		t.Fatalf("Prune just past the revocation instant = %d, %v; want 1", n, err)
	}
	// Stores keep microseconds, as timestamptz does; both adapters truncate the same way.
	fine := mintReq(t, bob, "laptop", time.Date(2026, 11, 28, 3, 4, 5, 678912345, tokyo))
	if got := mint(t, st, fine).Token.CreatedAt; !got.Equal(fine.Now.Truncate(time.Microsecond)) {
		t.Fatalf("created_at = %v, want %v truncated to microseconds", got, fine.Now)
	}
}

func testHonoursContext(t *testing.T, st tokens.Store) {
	m := mint(t, st, mintReq(t, alice, "laptop", base))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{}
	_, checks["Mint"] = st.Mint(ctx, mintReq(t, alice, "desktop", base))
	_, checks["LookupByHash"] = st.LookupByHash(ctx, m.Token.TokenHash)
	_, checks["HardExpire"] = st.HardExpire(ctx, m.Token.ID, base.Add(2*ttl))
	_, checks["Revoke"] = st.Revoke(ctx, alice, m.Token.ID, base)
	_, _, checks["ListLive"] = st.ListLive(ctx, alice, base, tokens.Page{Page: 1, Limit: 10})
	_, checks["Prune"] = st.Prune(ctx, base.Add(3*ttl), 10)
	_, checks["RevokedSince"] = st.RevokedSince(ctx, base)
	_, checks["LookupRevoked"] = st.LookupRevoked(ctx, m.Token.TokenHash)
	_, checks["RecordLastUsed"] = st.RecordLastUsed(ctx, []tokens.Use{{TokenID: m.Token.ID, At: base.Add(time.Minute)}})
	for name, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: err = %v, want context.Canceled", name, err)
		}
	}
	if got := lookup(t, st, m.Token.TokenHash); got.ID != m.Token.ID || got.LastUsedAt != nil {
		t.Fatalf("a cancelled call changed the store: %+v", got)
	}
	if _, total := list(t, st, alice, base, 1, 10); total != 1 {
		t.Fatalf("a cancelled mint or prune changed the store: %d live tokens", total)
	}
}
