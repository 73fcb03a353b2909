package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/tokens"
	"github.com/authgate/authgate/migrations"
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
	return &database{adminURL: adminURL, name: name, url: u.String()}, nil
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
// requests may name.
type world struct {
	fixture  directory.Fixture
	accounts []accountToken
	external []string // dfoe_ plaintexts
}

type accountToken struct {
	plain    string
	tenantID string   // a tenant the account is an active member of
	appIDs   []string // apps of that tenant
}

// prepareWorld migrates the database, creates and seeds the directory fixture, and mints n tokens of each kind.
func prepareWorld(ctx context.Context, db *database, n int) (*world, error) {
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, migrations.DifyDirectoryFixture); err != nil {
		return nil, fmt.Errorf("directory fixture schema: %w", err)
	}
	w := newWorld(n)
	if err := postgres.SeedDirectory(ctx, pool, w.fixture); err != nil {
		return nil, err
	}
	if err := w.mint(ctx, postgres.NewTokenStore(pool), n); err != nil {
		return nil, err
	}
	return w, nil
}

func fixtureID(kind, i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", kind, i) }

// newWorld lays out tenants with apps, and accounts that are members of one tenant each (owners of some, normal members of
// others), so membership verdicts differ per token and tenant.
func newWorld(n int) *world {
	var f directory.Fixture
	appsOf := make([][]string, tenantCount)
	for t := range tenantCount {
		id := fixtureID(0x7e, t)
		f.Tenants = append(f.Tenants, directory.Tenant{ID: id, Name: fmt.Sprintf("workspace %d", t), Status: directory.TenantStatusNormal})
		for a := range appsPerTenant {
			appID := fixtureID(0xa0+t, a)
			appsOf[t] = append(appsOf[t], appID)
			f.Apps = append(f.Apps, directory.App{ID: appID, TenantID: id, Name: fmt.Sprintf("app %d.%d", t, a), Mode: "chat",
				Status: directory.AppStatusNormal, EnableAPI: true})
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
		f.Joins = append(f.Joins, directory.Join{TenantID: f.Tenants[a%tenantCount].ID, AccountID: id, Role: role, Current: true})
	}
	return &world{fixture: f, accounts: make([]accountToken, 0, n), external: make([]string, 0, n)}
}

// mint creates n dfoa_ tokens (tokensPerAcct per account) and n dfoe_ tokens (one per external subject), concurrently.
func (w *world) mint(ctx context.Context, store *postgres.TokenStore, n int) error {
	type job struct {
		kind    tokens.Kind
		subject tokens.Subject
		device  string
		account int // index into fixture.Accounts, -1 for external subjects
	}
	jobs := make([]job, 0, 2*n)
	for i := range n {
		a := i / tokensPerAcct
		acct := w.fixture.Accounts[a]
		jobs = append(jobs, job{kind: tokens.Account, subject: tokens.AccountSubject(acct.ID, acct.Email),
			device: fmt.Sprintf("device-%d", i%tokensPerAcct), account: a})
		jobs = append(jobs, job{kind: tokens.ExternalSSO, account: -1, device: "device-0",
			subject: tokens.ExternalSubject(fmt.Sprintf("guest%d@partner.example", i), externalIssuer)})
	}
	plains := make([]string, len(jobs))
	errs := make([]error, len(jobs))
	now := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // a few connections' worth: minting is a single statement each
	for i, j := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			plain, err := tokens.Generate(j.kind)
			if err == nil {
				_, err = store.Mint(ctx, tokens.MintRequest{Subject: j.subject, ClientID: "difyctl", DeviceLabel: j.device,
					Prefix: j.kind.Prefix, TokenHash: tokens.Hash(plain), Now: now, ExpiresAt: now.Add(24 * time.Hour)})
			}
			plains[i], errs[i] = plain, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("mint: %w", err) // the first is enough: the others are usually the same failure
		}
	}
	for i, j := range jobs {
		if j.account < 0 {
			w.external = append(w.external, plains[i])
			continue
		}
		t := j.account % tenantCount
		w.accounts = append(w.accounts, accountToken{plain: plains[i], tenantID: w.fixture.Tenants[t].ID,
			appIDs: appIDsOf(w.fixture, w.fixture.Tenants[t].ID)})
	}
	return nil
}

func appIDsOf(f directory.Fixture, tenantID string) []string {
	var ids []string
	for _, a := range f.Apps {
		if a.TenantID == tenantID {
			ids = append(ids, a.ID)
		}
	}
	return ids
}
