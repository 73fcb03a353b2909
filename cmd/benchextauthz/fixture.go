package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// Fixture sizes. Accounts hold two tokens each (two devices), so a dfoa_ count of 1000 needs 500 accounts.
const (
	tenantCount    = 20
	appsPerTenant  = 10
	tokensPerAcct  = 2
	externalIssuer = "https://idp.example.com"
)

// database is a fresh database on the benchmark's Postgres server, dropped at the end.
type database struct {
	adminURL, name, url string
	// postmaster is the Postgres server's process when it runs on this machine (0 when not), for its CPU figure.
	postmaster int
}

func createDatabase(ctx context.Context, adminURL string) (*database, error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("postgres at %s: %w", redactURL(adminURL), err)
	}
	defer admin.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "authgate_bench_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	var backend int
	if err := admin.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return nil, fmt.Errorf("postgres backend pid: %w", err)
	}
	return &database{adminURL: adminURL, name: name, url: u.String(), postmaster: localPostmaster(backend)}, nil
}

// drop runs on a fresh context: it must happen even when the run was interrupted.
func (d *database) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, d.adminURL)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+d.name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// world is what the load generator needs to know about the fixture: every minted token with the directory rows its
// requests may name, in one set per use.
type world struct {
	fixture dirfixture.Fixture
	// mix: today's mix (o.tokens of each kind); w1: the many-token workload; cold: tokens no cache has seen (W4).
	mix, w1, cold tokenSet
}

type tokenSet struct {
	accounts []accountToken
	external []string // dfoe_ plaintexts
}

type accountToken struct {
	plain    string
	tenantID string   // a tenant the account is an active member of
	appIDs   []string // apps of that tenant
}

// Sizes of the other token sets.
const (
	w1Tokens   = 20_000 // W1: 20,000 tokens (half dfoa_, half dfoe_)
	coldTokens = 12_000 // W4: one fresh dfoa_ token per Check at 1,000/s over two rounds of warm-up and measurement
)

// prepareWorld migrates the database, creates and seeds the directory fixture, and mints the token sets.
func prepareWorld(ctx context.Context, db *database, n int, coldCount int) (*world, error) {
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, dirfixture.Schema); err != nil {
		return nil, fmt.Errorf("directory fixture schema: %w", err)
	}
	w := &world{fixture: newFixture(n)}
	if err := testenv.SeedDirectoryContext(ctx, pool, w.fixture); err != nil {
		return nil, err
	}
	m := &minter{pool: pool, f: w.fixture, appsOf: map[string][]string{}}
	for _, a := range w.fixture.Apps {
		m.appsOf[a.TenantID] = append(m.appsOf[a.TenantID], a.ID)
	}
	if w.mix, err = m.mint(ctx, n, n); err != nil {
		return nil, err
	}
	if w.w1, err = m.mint(ctx, w1Tokens/2, w1Tokens/2); err != nil {
		return nil, err
	}
	if w.cold, err = m.mint(ctx, coldCount, 0); err != nil {
		return nil, err
	}
	return w, nil
}

func fixtureID(kind, i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", kind, i) }

// newFixture lays out tenants with apps, and accounts that are members of one tenant each (owners of some, normal members of
// others), so membership verdicts differ per token and tenant.
func newFixture(n int) dirfixture.Fixture {
	var f dirfixture.Fixture
	for t := range tenantCount {
		id := fixtureID(0x7e, t)
		f.Tenants = append(f.Tenants, directory.Tenant{ID: id, Name: fmt.Sprintf("workspace %d", t), Status: directory.TenantStatusNormal})
		for a := range appsPerTenant {
			f.Apps = append(f.Apps, directory.App{ID: fixtureID(0xa0+t, a), TenantID: id, Name: fmt.Sprintf("app %d.%d", t, a),
				Mode: "chat", Status: directory.AppStatusNormal, EnableAPI: true})
		}
	}
	accounts := (n + tokensPerAcct - 1) / tokensPerAcct
	for a := range accounts {
		id := fixtureID(0xacc, a)
		f.Accounts = append(f.Accounts, directory.Account{ID: id, Email: fmt.Sprintf("user%d@example.com", a),
			Name: fmt.Sprintf("User %d", a), Status: directory.AccountStatusActive})
		role := "normal"
		if a < tenantCount {
			role = "owner"
		}
		f.Joins = append(f.Joins, dirfixture.Join{TenantID: f.Tenants[a%tenantCount].ID, AccountID: id, Role: role, Current: true})
	}
	return f
}

// minter writes token rows straight into oauth_access_tokens, many per statement: tens of thousands of tokens in a second or
// two, where one Mint per token would take a minute. The rows are what Mint writes for a fresh device.
type minter struct {
	pool     *pgxpool.Pool
	f        dirfixture.Fixture
	appsOf   map[string][]string
	devices  int // device labels used so far, so every (subject, client, device) is new
	external int // external subjects used so far
}

func (m *minter) mint(ctx context.Context, accounts, external int) (tokenSet, error) {
	var set tokenSet
	var emails, issuers, devices, prefixes, hashes []string
	var accountIDs []*string
	now := time.Now()
	for i := range accounts {
		plain, err := tokens.Generate(tokens.Account)
		if err != nil {
			return set, err
		}
		acct := m.f.Accounts[i%len(m.f.Accounts)]
		id := acct.ID
		emails, issuers, accountIDs = append(emails, acct.Email), append(issuers, tokens.AccountIssuer), append(accountIDs, &id)
		devices = append(devices, fmt.Sprintf("device-%d", m.devices+i))
		prefixes, hashes = append(prefixes, tokens.Account.Prefix), append(hashes, tokens.Hash(plain))
		tenant := m.f.Joins[i%len(m.f.Accounts)].TenantID
		set.accounts = append(set.accounts, accountToken{plain: plain, tenantID: tenant, appIDs: m.appsOf[tenant]})
	}
	m.devices += accounts
	for i := range external {
		plain, err := tokens.Generate(tokens.ExternalSSO)
		if err != nil {
			return set, err
		}
		emails = append(emails, fmt.Sprintf("guest%d@partner.example", m.external+i))
		issuers, accountIDs = append(issuers, externalIssuer), append(accountIDs, nil)
		devices = append(devices, "device-0")
		prefixes, hashes = append(prefixes, tokens.ExternalSSO.Prefix), append(hashes, tokens.Hash(plain))
		set.external = append(set.external, plain)
	}
	m.external += external
	_, err := m.pool.Exec(ctx, `
		INSERT INTO oauth_access_tokens (id, subject_email, subject_issuer, account_id, client_id, device_label, prefix,
			token_hash, created_at, expires_at)
		SELECT gen_random_uuid(), e, i, a::uuid, 'difyctl', d, p, h, $7, $8
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(e, i, a, d, p, h)`,
		emails, issuers, accountIDs, devices, prefixes, hashes, now, now.Add(24*time.Hour))
	if err != nil {
		return set, fmt.Errorf("mint: %w", err)
	}
	return set, nil
}
