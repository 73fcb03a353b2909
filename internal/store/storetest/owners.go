package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

// Two Dify accounts whose emails differ only in letter case: Dify matches account emails exactly, so both can exist (an
// account registered before Dify lower-cased emails, and one invited later with the same address in another case).
const (
	shoutingID = "2d8b5c6a-0e3f-4a41-9c5d-7e8f9a0b1c23"
	quietID    = "3e9c6d7b-1f40-4b52-8d6e-8f9a0b1c2d34"
)

var (
	shoutingAcct = tokens.AccountSubject(shoutingID, "Erin@Example.com")
	quietAcct    = tokens.AccountSubject(quietID, "erin@example.com")
)

// testCaseVariantAccountsKeepTheirTokens: the mint's existing row is the account's own (by account id), so such accounts
// never rotate each other's tokens. They share the per-device unique slot (emails are stored lower-cased): the second
// account's mint for a device label the first holds is ErrDeviceTaken and changes nothing; other labels are theirs.
func testCaseVariantAccountsKeepTheirTokens(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	laptop := mint(t, st, mintReq(t, shoutingAcct, "laptop", base))
	taken := mintReq(t, quietAcct, "laptop", base.Add(time.Minute))
	if m, err := st.Mint(ctx, taken); !errors.Is(err, tokens.ErrDeviceTaken) {
		t.Fatalf("mint for the other account on the held slot = %+v, %v; want ErrDeviceTaken", m, err)
	}
	sameToken(t, lookup(t, st, laptop.Token.TokenHash), laptop.Token) // untouched: same hash, same owner, same times
	wantNotFound(t, st, taken.TokenHash)
	wantNotRevoked(t, st, laptop.Token.TokenHash)

	desktop := mint(t, st, mintReq(t, quietAcct, "desktop", base.Add(2*time.Minute)))
	if desktop.RotatedHash != "" || desktop.Token.AccountID != quietID || desktop.Token.ID == laptop.Token.ID {
		t.Fatalf("the other account's own device = %+v", desktop)
	}
	again := mint(t, st, mintReq(t, shoutingAcct, "laptop", base.Add(3*time.Minute)))
	if again.Token.ID != laptop.Token.ID || again.RotatedHash != laptop.Token.TokenHash || again.Token.AccountID != shoutingID {
		t.Fatalf("the first account's second login = %+v, want its own row rotated", again)
	}
	if _, err := st.Mint(ctx, mintReq(t, shoutingAcct, "desktop", base.Add(4*time.Minute))); !errors.Is(err, tokens.ErrDeviceTaken) {
		t.Fatalf("mint for the first account on the other's slot: err = %v, want ErrDeviceTaken", err)
	}
	if got := lookup(t, st, desktop.Token.TokenHash); got.AccountID != quietID {
		t.Fatalf("the other account's token now belongs to %s", got.AccountID)
	}

	now := base.Add(5 * time.Minute)
	for _, c := range []struct {
		s    tokens.Subject
		want string
	}{{shoutingAcct, again.Token.ID}, {quietAcct, desktop.Token.ID}} {
		if live, total := list(t, st, c.s, now, 1, 10); total != 1 || live[0].ID != c.want {
			t.Fatalf("live tokens of %s = %d %v, want only %s", c.s.AccountID, total, ids(live), c.want)
		}
	}
	if _, err := st.Revoke(ctx, quietAcct, again.Token.ID, now); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("revoking the other account's token: err = %v, want ErrNotFound", err)
	}
	lookup(t, st, again.Token.TokenHash)
}

// testAccountRowFollowsItsEmail: an account whose email changed in Dify rotates its own row; the stored email follows.
func testAccountRowFollowsItsEmail(t *testing.T, st tokens.Store) {
	first := mint(t, st, mintReq(t, alice, "laptop", base))
	renamed := tokens.AccountSubject(aliceID, "Alice.New@Example.com")
	second := mint(t, st, mintReq(t, renamed, "laptop", base.Add(time.Minute)))
	if second.Token.ID != first.Token.ID || second.RotatedHash != first.Token.TokenHash ||
		second.Token.SubjectEmail != "alice.new@example.com" {
		t.Fatalf("mint after an email change = %+v, want the account's row rotated with the new email", second)
	}
	if _, total := list(t, st, alice, base.Add(time.Minute), 1, 10); total != 1 {
		t.Fatalf("live tokens after the email change = %d, want 1", total)
	}
}

// testExternalEmailFoldsASCIIOnly: external owners compare emails with ASCII case folding only, in every method, so
// addresses that Unicode folding would merge (the Kelvin sign U+212A and "k") are two owners.
func testExternalEmailFoldsASCIIOnly(t *testing.T, st tokens.Store) {
	ctx := context.Background()
	kelvin := tokens.ExternalSubject("\u212Aelvin@Example.com", idpA)
	plain := tokens.ExternalSubject("kelvin@example.com", idpA)
	a := mint(t, st, mintReq(t, kelvin, "laptop", base))
	if a.Token.SubjectEmail != "\u212Aelvin@example.com" {
		t.Fatalf("stored email = %q, want only ASCII lower-cased", a.Token.SubjectEmail)
	}
	b := mint(t, st, mintReq(t, plain, "laptop", base.Add(time.Minute)))
	if b.RotatedHash != "" || b.Token.ID == a.Token.ID {
		t.Fatalf("a mint for %q rotated the token of %q: %+v", plain.Email, kelvin.Email, b)
	}
	for _, c := range []struct {
		s    tokens.Subject
		want string
	}{{kelvin, a.Token.ID}, {plain, b.Token.ID}} {
		if live, total := list(t, st, c.s, base.Add(time.Minute), 1, 10); total != 1 || live[0].ID != c.want {
			t.Fatalf("live tokens of %q = %d %v, want only %s", c.s.Email, total, ids(live), c.want)
		}
	}
	if _, err := st.Revoke(ctx, plain, a.Token.ID, base.Add(time.Minute)); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("%q revoking the token of %q: err = %v, want ErrNotFound", plain.Email, kelvin.Email, err)
	}
	lookup(t, st, a.Token.TokenHash)
}

// testMintRejectsUnsafeEmails: an email that could not travel in an HTTP header, that does not fit the column, or an
// external subject that is not an email Dify accepts or claims the account issuer, is refused and stores nothing.
func testMintRejectsUnsafeEmails(t *testing.T, st tokens.Store) {
	for name, s := range map[string]tokens.Subject{
		"account email with NUL":            tokens.AccountSubject(aliceID, "alice\x00@example.com"),
		"account email with VT":             tokens.AccountSubject(aliceID, "ali\vce@example.com"),
		"account email with U+0085":         tokens.AccountSubject(aliceID, "ali\u0085ce@example.com"),
		"account email with U+2028":         tokens.AccountSubject(aliceID, "ali\u2028ce@example.com"),
		"account email with a bidi control": tokens.AccountSubject(aliceID, "ali\u202ece@example.com"),
		"account email not UTF-8":           tokens.AccountSubject(aliceID, "ali\xffce@example.com"),
		"account email over 255 characters": tokens.AccountSubject(aliceID, strings.Repeat("é", 250)+"@example.com"),
		"external email Dify refuses":       tokens.ExternalSubject("alice@localhost", idpA),
		"external email with a space":       tokens.ExternalSubject("al ice@example.com", idpA),
		"external subject, account issuer":  tokens.ExternalSubject("carol@example.com", tokens.AccountIssuer),
	} {
		req := mintReq(t, s, "laptop", base)
		if m, err := st.Mint(context.Background(), req); err == nil {
			t.Errorf("%s: Mint accepted it: %+v", name, m)
		}
		wantNotFound(t, st, req.TokenHash)
	}
}
