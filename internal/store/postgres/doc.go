// Package postgres is authgate's Postgres adapter: tokens.Store on Dify's oauth_access_tokens (and authgate's own
// authgate_revoked_tokens), directory.Directory on Dify's apps, tenants, accounts and memberships (read-only), the goose
// migrations that create or adopt the token table, and the one pool constructor (OpenPool). docs/reference/database.md
// describes the tables and what each statement may touch.
package postgres
