package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/tokens"
)

// Directory is directory.Directory on Dify's own tables, read-only.
type Directory struct {
	pool *pgxpool.Pool
}

var _ directory.Directory = (*Directory)(nil)

// NewDirectory returns a directory reading Dify's tables through pool.
func NewDirectory(pool *pgxpool.Pool) *Directory { return &Directory{pool: pool} }

// AppWithTenant implements directory.Directory.
func (d *Directory) AppWithTenant(ctx context.Context, appID string) (directory.App, directory.Tenant, bool, error) {
	id, ok := ids.Canonical(appID)
	if !ok {
		return directory.App{}, directory.Tenant{}, false, directory.ErrNotFound
	}
	var a directory.App
	var tenantID, tenantName, tenantStatus *string
	err := d.pool.QueryRow(ctx, `
		SELECT a.id::text, a.tenant_id::text, a.name, a.mode, a.status, a.enable_api, t.id::text, t.name, t.status
		FROM apps a LEFT JOIN tenants t ON t.id = a.tenant_id
		WHERE a.id = $1`, id).
		Scan(&a.ID, &a.TenantID, &a.Name, &a.Mode, &a.Status, &a.EnableAPI, &tenantID, &tenantName, &tenantStatus)
	if err != nil {
		return directory.App{}, directory.Tenant{}, false, notFound("app", err)
	}
	if tenantID == nil {
		return a, directory.Tenant{}, false, nil
	}
	return a, directory.Tenant{ID: *tenantID, Name: deref(tenantName), Status: deref(tenantStatus)}, true, nil
}

// Tenant implements directory.Directory.
func (d *Directory) Tenant(ctx context.Context, id string) (directory.Tenant, error) {
	id, ok := ids.Canonical(id)
	if !ok {
		return directory.Tenant{}, directory.ErrNotFound
	}
	var t directory.Tenant
	err := d.pool.QueryRow(ctx, `SELECT id::text, name, status FROM tenants WHERE id = $1`, id).Scan(&t.ID, &t.Name, &t.Status)
	if err != nil {
		return directory.Tenant{}, notFound("tenant", err)
	}
	return t, nil
}

// Account implements directory.Directory.
func (d *Directory) Account(ctx context.Context, id string) (directory.Account, error) {
	id, ok := ids.Canonical(id)
	if !ok {
		return directory.Account{}, directory.ErrNotFound
	}
	var a directory.Account
	err := d.pool.QueryRow(ctx, `SELECT id::text, email, name, status FROM accounts WHERE id = $1`, id).
		Scan(&a.ID, &a.Email, &a.Name, &a.Status)
	if err != nil {
		return directory.Account{}, notFound("account", err)
	}
	return a, nil
}

// AccountByEmail implements directory.Directory. An exact match wins over a case-insensitive one, should Dify hold both.
func (d *Directory) AccountByEmail(ctx context.Context, email string) (directory.Account, error) {
	email = tokens.NormalizeEmail(email)
	if email == "" {
		return directory.Account{}, directory.ErrNotFound
	}
	var a directory.Account
	err := d.pool.QueryRow(ctx, `SELECT id::text, email, name, status FROM accounts
		WHERE lower(email) = $1 ORDER BY email = $1 DESC, id LIMIT 1`, email).
		Scan(&a.ID, &a.Email, &a.Name, &a.Status)
	if err != nil {
		return directory.Account{}, notFound("account", err)
	}
	return a, nil
}

// AccountByOpenID implements directory.Directory: Dify's account_integrates row for (provider, open_id), which Dify keeps
// unique, joined to its account. Only account_id, provider and open_id are read, never the stored token.
func (d *Directory) AccountByOpenID(ctx context.Context, provider, openID string) (directory.Account, error) {
	if provider == "" || openID == "" {
		return directory.Account{}, directory.ErrNotFound
	}
	var a directory.Account
	err := d.pool.QueryRow(ctx, `SELECT a.id::text, a.email, a.name, a.status
		FROM account_integrates i JOIN accounts a ON a.id = i.account_id
		WHERE i.provider = $1 AND i.open_id = $2 ORDER BY a.id LIMIT 1`, provider, openID).
		Scan(&a.ID, &a.Email, &a.Name, &a.Status)
	if err != nil {
		return directory.Account{}, notFound("account by open id", err)
	}
	return a, nil
}

// IsActiveMember implements directory.Directory. Ids that are not UUIDs name no member.
func (d *Directory) IsActiveMember(ctx context.Context, tenantID, accountID string) (bool, error) {
	tenantID, tenantOK := ids.Canonical(tenantID)
	accountID, accountOK := ids.Canonical(accountID)
	if !tenantOK || !accountOK {
		return false, nil
	}
	var member bool
	err := d.pool.QueryRow(ctx, `SELECT EXISTS (
		SELECT 1 FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
		WHERE j.tenant_id = $1 AND j.account_id = $2 AND a.status = $3)`,
		tenantID, accountID, directory.AccountStatusActive).Scan(&member)
	if err != nil {
		return false, fmt.Errorf("postgres: membership: %w", err)
	}
	return member, nil
}

// Workspaces implements directory.Directory. Archived tenants are left out, as in Dify's own workspace list. Names are ordered
// bytewise (COLLATE "C") so the order does not depend on the database's locale.
func (d *Directory) Workspaces(ctx context.Context, accountID string) ([]directory.Workspace, error) {
	list := []directory.Workspace{}
	accountID, ok := ids.Canonical(accountID)
	if !ok {
		return list, nil
	}
	rows, err := d.pool.Query(ctx, `
		SELECT t.id::text, t.name, j.role, j.current
		FROM tenant_account_joins j JOIN tenants t ON t.id = j.tenant_id
		WHERE j.account_id = $1 AND t.status = $2
		ORDER BY t.name COLLATE "C", t.id`, accountID, directory.TenantStatusNormal)
	if err != nil {
		return nil, fmt.Errorf("postgres: workspaces: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var w directory.Workspace
		if err := rows.Scan(&w.ID, &w.Name, &w.Role, &w.Current); err != nil {
			return nil, fmt.Errorf("postgres: workspaces: %w", err)
		}
		list = append(list, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: workspaces: %w", err)
	}
	return list, nil
}

func notFound(what string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return directory.ErrNotFound
	}
	return fmt.Errorf("postgres: read %s: %w", what, err)
}
