// Package dirfixture is the stand-in for Dify's directory tables (apps, tenants, accounts, tenant_account_joins,
// account_integrates) where Dify is not there: the schema of their fixture copy and the rows to put in it, for tests, the
// benchmark and the dev stack (internal/store/memory seeds from a Fixture; testenv.SeedDirectory writes one to Postgres).
// In production these tables belong to Dify and authgate never writes them, so nothing the services ship imports this
// package.
package dirfixture

import (
	_ "embed"

	"github.com/authgate/authgate/internal/directory"
)

// Schema creates a minimal copy of Dify's apps, tenants, accounts, tenant_account_joins and account_integrates tables
// (IF NOT EXISTS). It is not a migration: deviceflow migrate never runs it.
//
//go:embed dify_directory.sql
var Schema string

// Fixture is directory content: the rows of each table.
type Fixture struct {
	Tenants  []directory.Tenant
	Accounts []directory.Account
	Apps     []directory.App
	Joins    []Join
	// Integrates are account_integrates rows: links of accounts to external sign-in identities.
	Integrates []Integrate
}

// Join is one tenant_account_joins row.
type Join struct {
	TenantID  string
	AccountID string
	Role      string
	Current   bool
}

// Integrate is one account_integrates row (the columns authgate reads).
type Integrate struct {
	AccountID string
	Provider  string
	OpenID    string
}
