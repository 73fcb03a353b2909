// Package testenv gives tests real Postgres and Redis: a fresh database per call, an exclusive Redis database per call, and
// private redis-server processes for fault tests. Without a service a test is skipped, except with CI=true, where it fails:
// a CI run must never pass by not testing.
package testenv

import (
	"os"
	"testing"
)

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// unavailable skips the test, or fails it under CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("testenv: "+format+" (CI=true: a missing service is a failure)", args...)
	}
	t.Skipf("testenv: "+format, args...)
}
