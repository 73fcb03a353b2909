package main

import (
	"context"
	"sync"
	"testing"

	"github.com/authgate/authgate/internal/testenv"
)

// TestValidTokenNotRefusedForItsNeighboursDuringRedisOutage: with Redis down the in-process cache layer stops serving (it
// cannot follow revocations through Redis), so every Check of a valid token is a Postgres lookup. A flood of random bearers
// from the same address keeps that address over its invalid-bearer budget and the suspect lane empty; a token Postgres
// already found valid must still be allowed on every Check, never asked to retry.
func TestValidTokenNotRefusedForItsNeighboursDuringRedisOutage(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	w := newWorld(t)
	w.redisURL = rs.URL()
	srv := w.start(nil)
	valid, _ := w.accountToken(accountActive, "ada@example.com")
	if resp := checkFrom(t, srv, "198.51.100.7", valid); resp.GetOkResponse() == nil {
		t.Fatalf("valid token before the outage: %v", resp)
	}
	rs.Stop()

	ctx, stop := context.WithCancel(context.Background())
	var flood sync.WaitGroup
	flood.Go(func() {
		for ctx.Err() == nil {
			checkAll(t, srv, randomBearers(t, 50))
		}
	})
	defer func() { stop(); flood.Wait() }()

	acquires := srv.app.pool.Stat().AcquireCount()
	for i := range 40 {
		resp := checkFrom(t, srv, "198.51.100.7", valid)
		if resp.GetOkResponse() == nil {
			t.Fatalf("Check %d of a valid token during the flood and the outage: %v", i, resp)
		}
	}
	// The Checks above reached Postgres (the flood alone cannot account for all of them being allowed from memory).
	if srv.app.pool.Stat().AcquireCount() == acquires {
		t.Fatal("no Postgres lookup during the outage: the test did not exercise the budget")
	}
}
