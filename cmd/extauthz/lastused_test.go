package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/testenv"
)

// lastUsed reads a token row's last_used_at straight from Postgres.
func (w *world) lastUsed(id string) *time.Time {
	w.t.Helper()
	var at *time.Time
	if err := w.pool.QueryRow(context.Background(), `SELECT last_used_at FROM oauth_access_tokens WHERE id = $1`, id).
		Scan(&at); err != nil {
		w.t.Fatal(err)
	}
	return at
}

// waitLastUsed waits until the row's last_used_at is at or after since, and returns it.
func (w *world) waitLastUsed(id string, since time.Time) time.Time {
	w.t.Helper()
	var got *time.Time
	testenv.Eventually(w.t, 10*time.Second, "last_used_at written", func() bool {
		got = w.lastUsed(id)
		return got != nil && !got.Before(since.Truncate(time.Microsecond))
	})
	return *got
}

// TestCheckRecordsLastUsed: an allowed Check writes its token's last_used_at within a flush; a denied Check of another
// token, made first, writes nothing.
func TestCheckRecordsLastUsed(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	cy, cyID := w.accountToken(accountNotMember, "cy@example.com")

	expectDeny(t, srv.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(cy)), 403,
		pipeline.CodeWorkspaceMembershipRevoked, nil)
	before := time.Now()
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/me", bearer(ada)), accountHeaders(accountActive, "ada@example.com", adaID))
	w.waitLastUsed(adaID, before)
	// Uses are written in the order they were noted: had the deny noted cy's, it would be written by now.
	if got := w.lastUsed(cyID); got != nil {
		t.Fatalf("a denied Check wrote last_used_at %v", got)
	}
	if n := metricValue(t, srv, `authgate_extauthz_last_used_total\{[^}]*result="written"[^}]*\}`); n != 1 {
		t.Errorf("written counter = %v, want 1", n)
	}
}

// TestLastUsedWithPostgresDown: with Postgres hung, then refusing, a replica decides Checks exactly as before, answering
// tokens other replicas cached without waiting on its last-used writes, which fail and are counted; once Postgres is back
// the token's next use is written.
func TestLastUsedWithPostgresDown(t *testing.T) {
	w := newWorld(t)
	healthy := w.start(nil)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	expectAllow(t, healthy.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH) // caches ada's token in Redis
	first := w.waitLastUsed(adaID, time.Time{})

	u, err := url.Parse(w.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartFaultProxy(t, u.Host)
	u.Host = proxy.Addr
	// No limiter: the test makes more Checks of one token than a minute's budget.
	cut := w.start(map[string]string{"DATABASE_URL": u.String(), "CHECK_TIMEOUT": "1s", "OPENAPI_RATE_LIMIT_PER_TOKEN": "0"})
	other, _ := w.accountToken(accountActive, "ada@example.com")

	proxy.Pause()
	t.Cleanup(proxy.Resume) // before the servers' pools close: a connection left hanging would hold up their shutdown
	for i := range 20 {
		start := time.Now()
		expectAllow(t, cut.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
		// Generous for a warm Check (milliseconds), and below the 2 s a hung last-used write takes to time out.
		if took := time.Since(start); took > time.Second {
			t.Fatalf("Check %d with Postgres hung took %v", i, took)
		}
	}
	expectDeny(t, cut.check(t, "GET", "/openapi/v1/me", bearer(other)), 503, pipeline.CodeAuthUnavailable, nil)
	failed := `authgate_extauthz_last_used_total\{[^}]*result="failed"[^}]*\}`
	testenv.Eventually(t, 10*time.Second, "a hung write counted as failed", func() bool {
		return metricValue(t, cut, failed) >= 1
	})

	proxy.Stop()
	for range 5 {
		expectAllow(t, cut.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
	}
	n := metricValue(t, cut, failed)
	testenv.Eventually(t, 10*time.Second, "a refused write counted as failed", func() bool {
		return metricValue(t, cut, failed) > n
	})
	if got := w.lastUsed(adaID); got == nil || !got.Equal(first) {
		t.Fatalf("last_used_at = %v while the replica could not reach Postgres, want the healthy replica's %v", got, first)
	}

	proxy.Start()
	proxy.Resume()
	back := time.Now()
	// The failed writes let the token go: its next use is written, well within the five-minute interval.
	testenv.Eventually(t, 20*time.Second, "written once Postgres is back", func() bool {
		expectAllow(t, cut.check(t, "GET", "/openapi/v1/me", bearer(ada)), adaH)
		got := w.lastUsed(adaID)
		return got != nil && !got.Before(back.Truncate(time.Microsecond))
	})
}
