package deviceflow

import (
	"context"
	"net/http"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/testenv"
)

// TestBearerEndpointsRecordLastUse: a request the bearer authenticates records its token's use (at most once per
// interval), revocations included; /account/sessions lists the stored time; a refused bearer records nothing.
func TestBearerEndpointsRecordLastUse(t *testing.T) {
	e := newFlowEnv(t, nil)
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	e.clock.Set(t0)
	reader := sdkmetric.NewManualReader()
	rec, err := lastused.New(e.store, lastused.Options{Interval: time.Minute, FlushEvery: 20 * time.Millisecond, Now: e.clock.Now,
		Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"), MetricPrefix: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.deps.LastUsed = rec
	laptop, desktop := e.login(flowAnn, "laptop"), e.login(flowAnn, "desktop")
	lastUsed := func(id string) *time.Time {
		var at *time.Time
		if err := e.pool.QueryRow(context.Background(), `SELECT last_used_at FROM oauth_access_tokens WHERE id = $1`, id).
			Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	waitFor := func(id string, want time.Time) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, "last_used_at "+want.String(), func() bool {
			got := lastUsed(id)
			return got != nil && got.Equal(want)
		})
	}

	t1 := t0.Add(time.Minute)
	e.clock.Set(t1)
	if r := e.get("/me", withBearer(laptop.str("token"))); r.Status != http.StatusOK {
		t.Fatalf("/me: %d %s", r.Status, r.Raw)
	}
	waitFor(laptop.str("token_id"), t1)

	// Within the interval the listing's own use writes nothing new; it shows the stored times, in UTC.
	e.clock.Set(t1.Add(30 * time.Second))
	r := e.get("/account/sessions", withBearer(laptop.str("token")))
	if r.Status != http.StatusOK {
		t.Fatalf("sessions: %d %s", r.Status, r.Raw)
	}
	shown := map[string]any{}
	for _, d := range r.Body["data"].([]any) {
		s := d.(map[string]any)
		shown[s["id"].(string)] = s["last_used_at"]
	}
	if shown[laptop.str("token_id")] != t1.Format(time.RFC3339) || shown[desktop.str("token_id")] != nil {
		t.Fatalf("listed last uses %v; want the laptop's %s and none for the desktop", shown, t1.Format(time.RFC3339))
	}

	// Past the interval a revocation request is a use like any other, of the token that made it.
	t2 := t1.Add(2 * time.Minute)
	e.clock.Set(t2)
	if r := e.do(http.MethodDelete, apiPrefix+"/account/sessions/"+desktop.str("token_id"), "", nil,
		withBearer(laptop.str("token"))); r.Status != http.StatusNoContent {
		t.Fatalf("revoke desktop: %d %s", r.Status, r.Raw)
	}
	waitFor(laptop.str("token_id"), t2)

	// Refused bearers record nothing: the revoked desktop token, now presented.
	wantErr(t, e.get("/me", withBearer(desktop.str("token"))), http.StatusUnauthorized, "invalid_token")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(desktop.str("token_id")); got != nil {
		t.Fatalf("the desktop token was never used, yet last_used_at = %v", got)
	}
	// Every use that reached the store was written: the refused bearer was never noted.
	results := testenv.CounterByAttribute(t, reader, "test_last_used", "result")
	if len(results) != 1 || results["written"] != 2 {
		t.Fatalf("uses by result %v, want only the laptop's 2 written", results)
	}
}
