package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
)

// SeedDirectory writes a fixture into the fixture copy of Dify's tables (migrations.DifyDirectoryFixture). Tests only:
// production never writes Dify's tables.
func SeedDirectory(ctx context.Context, pool *pgxpool.Pool, f directory.Fixture) error {
	batch := &pgx.Batch{}
	for _, x := range f.Tenants {
		batch.Queue(`INSERT INTO tenants (id, name, status) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status`, x.ID, x.Name, x.Status)
	}
	for _, x := range f.Accounts {
		batch.Queue(`INSERT INTO accounts (id, email, name, status) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, status = EXCLUDED.status`,
			x.ID, x.Email, x.Name, x.Status)
	}
	for _, x := range f.Apps {
		batch.Queue(`INSERT INTO apps (id, tenant_id, name, mode, status, enable_api) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, mode = EXCLUDED.mode,
			status = EXCLUDED.status, enable_api = EXCLUDED.enable_api`,
			x.ID, x.TenantID, x.Name, x.Mode, x.Status, x.EnableAPI)
	}
	for _, x := range f.Joins {
		batch.Queue(`INSERT INTO tenant_account_joins (tenant_id, account_id, role, current) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant_id, account_id) DO UPDATE SET role = EXCLUDED.role, current = EXCLUDED.current`,
			x.TenantID, x.AccountID, x.Role, x.Current)
	}
	for _, x := range f.Integrates {
		batch.Queue(`INSERT INTO account_integrates (account_id, provider, open_id, encrypted_token) VALUES ($1, $2, $3, '')
			ON CONFLICT (provider, open_id) DO UPDATE SET account_id = EXCLUDED.account_id`, x.AccountID, x.Provider, x.OpenID)
	}
	if err := pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("postgres: seed directory: %w", err)
	}
	return nil
}
