// Package migrations embeds authgate's forward-only SQL migrations (goose format) and the fixture copy of Dify's directory
// tables used by tests and the dev run. The runner is internal/store/postgres.
package migrations

import "embed"

// SQL holds the production migrations, applied in version order.
//
//go:embed *.sql
var SQL embed.FS

// DifyDirectoryFixture creates a minimal copy of Dify's apps, tenants, accounts, tenant_account_joins and account_integrates
// tables. It is not a production migration: in production these tables belong to Dify.
//
//go:embed fixtures/dify_directory.sql
var DifyDirectoryFixture string
