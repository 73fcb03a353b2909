// Package e2e holds end-to-end tests of production topologies: the real extauthz and deviceflow binaries, several
// replicas of each, on one Postgres and on a standalone Redis, a 3-master Redis Cluster or a Sentinel-managed master and
// replica. A device login goes through deviceflow like a CLI and its user would; Checks go to extauthz like Envoy's would.
// The tests need redis-server, redis-cli and Postgres; without them they are skipped (failed under CI=true).
package e2e
