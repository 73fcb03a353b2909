package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// grantStatements reads docs/postgres-grants.sql: the statements to run before `deviceflow migrate` (steps 1 to 3) and
// after it (step 4 on, the optional extauthz role's commented-out recipe included), with the roles and the database
// renamed.
func grantStatements(t *testing.T, renames map[string]string) (before, after []string) {
	t.Helper()
	raw, err := os.ReadFile("../../../docs/postgres-grants.sql")
	if err != nil {
		t.Fatal(err)
	}
	var sql [2]strings.Builder
	phase, optional := 0, false
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "-- 4."):
			phase = 1
		case strings.HasPrefix(line, "-- 6."):
			optional = true
		case optional && strings.HasPrefix(line, "--   "): // the optional recipe: statements behind a comment marker
			sql[phase].WriteString(strings.TrimPrefix(line, "--   ") + "\n")
		case strings.HasPrefix(line, "--"):
		default:
			sql[phase].WriteString(line + "\n")
		}
	}
	split := func(s string) []string {
		for from, to := range renames {
			s = regexp.MustCompile(`\b`+from+`\b`).ReplaceAllString(s, to)
		}
		var out []string
		for _, stmt := range strings.Split(s, ";") {
			if stmt = strings.TrimSpace(stmt); stmt != "" {
				out = append(out, stmt)
			}
		}
		return out
	}
	return split(sql[0].String()), split(sql[1].String())
}

func poolAs(t *testing.T, dbURL, role string) *pgxpool.Pool {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return testenv.Pool(t, u.String())
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("%s: err = %v, want permission denied (42501)", what, err)
	}
}

// TestGrants: docs/postgres-grants.sql, run against a fresh database with real roles, lets each role run exactly the
// statements its service runs: the runtime role everything deviceflow and extauthz do, the optional extauthz role its
// lookups, hard-expires, last-used times and revocation reads, and no other write.
func TestGrants(t *testing.T) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := "_" + hex.EncodeToString(b[:])
	roles := map[string]string{"authgate_runtime": "", "authgate_migrate": "", "authgate_extauthz": ""}
	for r := range roles {
		roles[r] = "agt_" + strings.TrimPrefix(r, "authgate_") + suffix
	}
	// Registered before the database is created, so it runs after the database is dropped, taking the roles' privileges
	// in it along.
	var serverURL string
	t.Cleanup(func() {
		if serverURL == "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Errorf("drop roles: %v", err)
			return
		}
		defer conn.Close(ctx)
		for _, r := range roles {
			if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+r); err != nil {
				t.Errorf("drop role %s: %v", r, err)
			}
		}
	})
	dbURL := testenv.EmptyPostgresURL(t)
	admin := testenv.Pool(t, dbURL)
	ctx := context.Background()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/postgres"
	serverURL = u.String()
	renames := map[string]string{"dify": admin.Config().ConnConfig.Database}
	for from, to := range roles {
		renames[from] = to
	}
	before, after := grantStatements(t, renames)

	// Dify's tables exist first, owned by another role (here the superuser), as in a Dify database.
	if _, err := admin.Exec(ctx, dirfixture.Schema); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range before {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := postgres.Migrate(ctx, poolAs(t, dbURL, roles["authgate_migrate"])); err != nil {
		t.Fatalf("migrate as the migration role: %v", err)
	}
	for _, stmt := range after {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	const (
		accountID = "0b6f3a4e-8c1d-4e2f-9a3b-5c6d7e8f9a01"
		tenantID  = "11111111-1111-4111-8111-111111111111"
		appID     = "bbbbbbbb-0000-4000-8000-000000000001"
	)
	testenv.SeedDirectory(t, admin, dirfixture.Fixture{
		Tenants:    []directory.Tenant{{ID: tenantID, Name: "main", Status: "normal"}},
		Accounts:   []directory.Account{{ID: accountID, Email: "ann@example.com", Name: "Ann", Status: "active"}},
		Apps:       []directory.App{{ID: appID, TenantID: tenantID, Name: "app", Mode: "chat", Status: "normal", EnableAPI: true}},
		Joins:      []dirfixture.Join{{TenantID: tenantID, AccountID: accountID, Role: "owner", Current: true}},
		Integrates: []dirfixture.Integrate{{AccountID: accountID, Provider: directory.ProviderGitHub, OpenID: "583231"}},
	})

	runtimePool := poolAs(t, dbURL, roles["authgate_runtime"])
	runtime := postgres.NewTokenStore(runtimePool)
	subject := tokens.AccountSubject(accountID, "ann@example.com")
	now := time.Now()
	mint := func(device string, expiresIn time.Duration) tokens.Token {
		t.Helper()
		m, err := runtime.Mint(ctx, tokens.MintRequest{Subject: subject, ClientID: "difyctl", DeviceLabel: device,
			Prefix: "dfoa_", TokenHash: tokens.Hash(device + suffix), Now: now.Add(-time.Hour), ExpiresAt: now.Add(expiresIn)})
		if err != nil {
			t.Fatalf("mint as the runtime role: %v", err)
		}
		return m.Token
	}

	// The runtime role: deviceflow's statements (and extauthz's, when it shares the role).
	laptop := mint("laptop", time.Hour)
	mint("laptop", time.Hour) // a rotation
	if _, _, err := runtime.ListLive(ctx, subject, now, tokens.Page{Page: 1, Limit: 10}); err != nil {
		t.Fatalf("runtime role: list: %v", err)
	}
	if n, err := runtime.RecordLastUsed(ctx, []tokens.Use{{TokenID: laptop.ID, At: now}}); err != nil || n != 1 {
		t.Fatalf("runtime role: record last use = %d, %v", n, err)
	}
	if _, err := runtime.Revoke(ctx, subject, laptop.ID, now); err != nil {
		t.Fatalf("runtime role: revoke: %v", err)
	}
	if _, err := runtime.LookupRevoked(ctx, tokens.Hash("laptop"+suffix)); err != nil {
		t.Fatalf("runtime role: look up revoked: %v", err)
	}
	if _, err := runtime.Prune(ctx, now.Add(time.Minute), 10); err != nil {
		t.Fatalf("runtime role: prune: %v", err)
	}
	dir := postgres.NewDirectory(runtimePool)
	if _, err := dir.Workspaces(ctx, accountID); err != nil {
		t.Fatalf("runtime role: workspaces: %v", err)
	}
	if _, err := dir.AccountByEmail(ctx, "ann@example.com"); err != nil {
		t.Fatalf("runtime role: account by email: %v", err)
	}
	if _, err := dir.Tenant(ctx, tenantID); err != nil {
		t.Fatalf("runtime role: tenant: %v", err)
	}
	if a, err := dir.AccountByOpenID(ctx, directory.ProviderGitHub, "583231"); err != nil || a.ID != accountID {
		t.Fatalf("runtime role: account by GitHub id = %+v, %v", a, err)
	}
	_, err = runtimePool.Exec(ctx, `SELECT encrypted_token FROM account_integrates`)
	wantDenied(t, "runtime role reading the OAuth tokens Dify stores", err)

	// The extauthz role: what a Check and its background work run.
	live, expired := mint("desktop", time.Hour), mint("tablet", -time.Minute)
	extPool := poolAs(t, dbURL, roles["authgate_extauthz"])
	ext := postgres.NewTokenStore(extPool)
	if _, err := ext.LookupByHash(ctx, live.TokenHash); err != nil {
		t.Fatalf("extauthz role: lookup: %v", err)
	}
	if _, a, member, err := ext.LookupByHashWithAccount(ctx, live.TokenHash, tenantID); err != nil || a.ID != accountID || !member {
		t.Fatalf("extauthz role: lookup with account = %+v, %v, %v", a, member, err)
	}
	if hit, err := ext.HardExpire(ctx, expired.ID, now); err != nil || !hit {
		t.Fatalf("extauthz role: hard-expire = %v, %v", hit, err)
	}
	if n, err := ext.RecordLastUsed(ctx, []tokens.Use{{TokenID: live.ID, At: now}}); err != nil || n != 1 {
		t.Fatalf("extauthz role: record last use = %d, %v", n, err)
	}
	if _, err := ext.RevokedSince(ctx, now.Add(-time.Hour)); err != nil {
		t.Fatalf("extauthz role: revoked since: %v", err)
	}
	if _, err := ext.LookupRevoked(ctx, expired.TokenHash); err != nil {
		t.Fatalf("extauthz role: look up revoked: %v", err)
	}
	extDir := postgres.NewDirectory(extPool)
	if _, _, found, err := extDir.AppWithTenant(ctx, appID); err != nil || !found {
		t.Fatalf("extauthz role: app = %v, %v", found, err)
	}
	if _, err := extDir.Account(ctx, accountID); err != nil {
		t.Fatalf("extauthz role: account: %v", err)
	}
	if ok, err := extDir.IsActiveMember(ctx, tenantID, accountID); err != nil || !ok {
		t.Fatalf("extauthz role: membership = %v, %v", ok, err)
	}
	// ... and no other write.
	_, err = extPool.Exec(ctx, `UPDATE oauth_access_tokens SET device_label = 'x' WHERE id = $1`, live.ID)
	wantDenied(t, "extauthz role updating device_label", err)
	_, err = extPool.Exec(ctx, `UPDATE oauth_access_tokens SET expires_at = now() + interval '1 year' WHERE id = $1`, live.ID)
	wantDenied(t, "extauthz role extending a token", err)
	_, err = ext.Mint(ctx, tokens.MintRequest{Subject: subject, ClientID: "difyctl", DeviceLabel: "phone", Prefix: "dfoa_",
		TokenHash: tokens.Hash("phone" + suffix), Now: now, ExpiresAt: now.Add(time.Hour)})
	wantDenied(t, "extauthz role minting", err)
	_, err = extPool.Exec(ctx, `DELETE FROM oauth_access_tokens WHERE id = $1`, live.ID)
	wantDenied(t, "extauthz role deleting", err)
	_, err = extPool.Exec(ctx, `UPDATE accounts SET status = 'active'`)
	wantDenied(t, "extauthz role writing Dify's accounts", err)
}
