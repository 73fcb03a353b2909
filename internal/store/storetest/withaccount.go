package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/tokens"
)

// TokenAccountStore is a token store that also reads a token's row together with its account and one membership of the
// account, in one read (what extauthz asks for a token no cache knows).
type TokenAccountStore interface {
	tokens.Store
	LookupByHashWithAccount(ctx context.Context, hash, tenantID string) (tokens.Token, directory.Account, bool, error)
}

// RunLookupWithAccount runs the suite of LookupByHashWithAccount. newStore must return an empty token store over a
// directory holding exactly f. Every answer must be the one LookupByHash, Account and IsActiveMember give separately.
func RunLookupWithAccount(t *testing.T, newStore func(t *testing.T, f dirfixture.Fixture) TokenAccountStore) {
	f := DirectoryFixture()
	st := newStore(t, f)
	ctx := context.Background()
	account := func(id string) directory.Account {
		for _, a := range f.Accounts {
			if a.ID == id {
				return a
			}
		}
		t.Fatalf("no fixture account %s", id)
		return directory.Account{}
	}
	active := mint(t, st, mintReq(t, tokens.AccountSubject(accountActive, "dana@example.com"), "laptop", base)).Token
	banned := mint(t, st, mintReq(t, tokens.AccountSubject(accountBanned, "eve@example.com"), "laptop", base)).Token
	gone := mint(t, st, mintReq(t, tokens.AccountSubject(accountGone, "gone@example.com"), "laptop", base)).Token
	external := mint(t, st, mintReq(t, tokens.ExternalSubject("dana@example.com", idpA), "laptop", base)).Token
	expired := mint(t, st, tokens.MintRequest{Subject: tokens.AccountSubject(accountActive, "dana@example.com"),
		ClientID: client, DeviceLabel: "old", Prefix: tokens.Account.Prefix, TokenHash: newHash(t), Now: base.Add(-ttl),
		ExpiresAt: base.Add(-ttl / 2)}).Token
	revoked := mint(t, st, mintReq(t, tokens.AccountSubject(accountActive, "dana@example.com"), "phone", base)).Token
	if _, err := st.Revoke(ctx, tokens.AccountSubject(accountActive, "dana@example.com"), revoked.ID, base); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name        string
		tok         tokens.Token
		tenant      string
		wantAccount directory.Account
		wantMember  bool
	}{
		{"active member", active, tenantAlpha, account(accountActive), true},
		{"active member, upper-case tenant id", active, strings.ToUpper(tenantBeta), account(accountActive), true},
		{"active, not a member", active, tenantMissing, account(accountActive), false},
		{"active, no tenant asked", active, "", account(accountActive), false},
		{"active, malformed tenant", active, "alpha", account(accountActive), false},
		{"banned member", banned, tenantAlpha, account(accountBanned), false},
		{"account gone", gone, tenantAlpha, directory.Account{}, false},
		{"external subject", external, tenantAlpha, directory.Account{}, false},
		{"expired row, returned as LookupByHash returns it", expired, tenantAlpha, account(accountActive), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, a, member, err := st.LookupByHashWithAccount(ctx, tc.tok.TokenHash, tc.tenant)
			if err != nil {
				t.Fatalf("LookupByHashWithAccount: %v", err)
			}
			sameToken(t, tok, lookup(t, st, tc.tok.TokenHash))
			if a != tc.wantAccount || member != tc.wantMember {
				t.Fatalf("account %+v member %v, want %+v %v", a, member, tc.wantAccount, tc.wantMember)
			}
		})
	}
	t.Run("unknown and revoked hashes are not found", func(t *testing.T) {
		for _, hash := range []string{newHash(t), revoked.TokenHash} {
			if tok, _, _, err := st.LookupByHashWithAccount(ctx, hash, tenantAlpha); !errors.Is(err, tokens.ErrNotFound) {
				t.Fatalf("LookupByHashWithAccount = %+v, %v; want ErrNotFound", tok, err)
			}
		}
	})
	t.Run("honours its context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, _, err := st.LookupByHashWithAccount(cctx, active.TokenHash, tenantAlpha); !errors.Is(err, context.Canceled) {
			t.Fatalf("with a cancelled context: %v, want context.Canceled", err)
		}
	})
}
