// Package migrations embeds authgate's forward-only SQL migrations (goose format). The runner is internal/store/postgres.
package migrations

import "embed"

// SQL holds the production migrations, applied in version order.
//
//go:embed *.sql
var SQL embed.FS
