// Package chaos holds `make chaos`: the real extauthz and deviceflow binaries under mixed load (device logins, polls,
// Checks, revocations) while a private Redis is hung, killed and restarted and a private Postgres restarted and crashed on
// a schedule. It then checks what must never happen — an approval lost while Redis kept its data, a revoked token allowed
// more than a second after Redis was healthy, a wrong allow, an answer other than allow/deny/503 — and prints a table.
// Its test runs only with CHAOS=1 (see README); it is too long and too heavy for `make test`.
package chaos
