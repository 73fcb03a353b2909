package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// The Postgres CPU probe finds the server's postmaster from a backend of this machine and counts what its backends spend;
// a process number that is not a Postgres backend here yields no postmaster.
func TestPostgresCPUProbe(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Postgres(t)
	var backend int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	postmaster := localPostmaster(backend)
	if postmaster == 0 {
		t.Skip("Postgres does not run on this machine") // the probe then reports nothing, which is what this shows
	}
	if got := localPostmaster(os.Getpid()); got != 0 {
		t.Fatalf("this test process taken for a Postgres backend of %d", got)
	}
	before := postgresCPU(postmaster)
	testenv.Eventually(t, time.Minute, "Postgres CPU counted for its backends' work", func() bool {
		// generate_series over a million rows: some tens of milliseconds of a backend's CPU, a few clock ticks.
		if _, err := pool.Exec(ctx, "SELECT sum(i) FROM generate_series(1, 1000000) AS i"); err != nil {
			t.Fatal(err)
		}
		return postgresCPU(postmaster)-before >= 5*clockTick
	})
}
