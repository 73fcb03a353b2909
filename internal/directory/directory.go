// Package directory reads Dify's own tables (apps, tenants, accounts, tenant_account_joins, account_integrates). authgate
// never writes them.
package directory

import (
	"context"
	"errors"
)

// ErrNotFound: no such row.
var ErrNotFound = errors.New("directory: not found")

// Status values of Dify's rows that authgate acts on.
const (
	AppStatusNormal     = "normal"
	TenantStatusNormal  = "normal"
	TenantStatusArchive = "archive"
	AccountStatusActive = "active"
	AccountStatusBanned = "banned"

	// ProviderGitHub is the provider of Dify's account_integrates rows that link an account to a GitHub user.
	ProviderGitHub = "github"
)

type Tenant struct {
	ID     string
	Name   string
	Status string
}

type App struct {
	ID        string
	TenantID  string
	Name      string
	Mode      string
	Status    string
	EnableAPI bool
}

type Account struct {
	ID     string
	Email  string
	Name   string
	Status string
}

// Workspace is a tenant as one account sees it.
type Workspace struct {
	ID      string
	Name    string
	Role    string
	Current bool
}

// Directory reads the directory. Every method honours ctx; a missing row is ErrNotFound.
type Directory interface {
	// AppWithTenant returns the app and its tenant in one read; a missing tenant is reported as tenantFound = false.
	AppWithTenant(ctx context.Context, appID string) (app App, tenant Tenant, tenantFound bool, err error)
	Tenant(ctx context.Context, id string) (Tenant, error)
	Account(ctx context.Context, id string) (Account, error)
	// AccountByEmail matches case-insensitively.
	AccountByEmail(ctx context.Context, email string) (Account, error)
	// AccountByOpenID returns the account that Dify's account_integrates links to the identity openID of provider (e.g.
	// ProviderGitHub and the GitHub user id), matched exactly; a link whose account does not exist is ErrNotFound.
	AccountByOpenID(ctx context.Context, provider, openID string) (Account, error)
	// IsActiveMember reports whether the account is active and has a tenant_account_joins row for the tenant.
	IsActiveMember(ctx context.Context, tenantID, accountID string) (bool, error)
	// Workspaces lists the account's tenants with their names and the account's roles, in a stable order (name, then id).
	Workspaces(ctx context.Context, accountID string) ([]Workspace, error)
}
