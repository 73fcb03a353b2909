package ratelimit

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/testenv"
)

// roundTrips reads the round-trips counter of kind from reader.
func roundTrips(t *testing.T, reader *sdkmetric.ManualReader, kind string) int64 {
	t.Helper()
	return testenv.CounterByAttribute(t, reader, "test_ratelimit_round_trips", "kind")[kind]
}

// The round trips the limiter counts are the script runs Redis counts (a private server runs only this test's), and
// concurrent decisions share them.
func TestRoundTripsAreCounted(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	rdb := srv.Client()
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	rl := newLimiter(t, rdb, Options{Meter: meter, MetricPrefix: "test"})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if _, err := rl.Allow(ctx, "k"+strconv.Itoa(i%20), 1000, time.Minute); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	info := rdb.Info(ctx, "commandstats").Val()
	var scripts int64
	for _, cmd := range []string{"evalsha", "eval"} {
		if m := regexp.MustCompile(`cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			scripts += n
		}
	}
	st := rl.Stats()
	if st.RedisDecisions != 200 || st.ScriptRoundTrips != scripts || st.ScriptRoundTrips < 1 {
		t.Fatalf("stats %+v; Redis ran the script %d times; want 200 decisions in as many round trips as runs", st, scripts)
	}
	if n := roundTrips(t, reader, "script"); n != st.ScriptRoundTrips {
		t.Fatalf("metric: %d script round trips, stats %d", n, st.ScriptRoundTrips)
	}

	// A batched limiter's writes: each a clock read and a pipeline.
	rb := newLimiter(t, rdb, Options{Mode: Batched, Allowance: 100, BatchInterval: 10 * time.Millisecond, Meter: meter,
		MetricPrefix: "test"})
	if d, err := rb.Allow(ctx, "w", 1000, time.Minute); err != nil || !d.Local {
		t.Fatalf("%+v, %v; want a local admission", d, err)
	}
	testenv.Eventually(t, 5*time.Second, "the hit written", func() bool { return rdb.ZCard(ctx, "w").Val() == 1 })
	testenv.Eventually(t, 5*time.Second, "the write counted", func() bool { return roundTrips(t, reader, "write") >= 2 })
	if n := roundTrips(t, reader, "write"); n%2 != 0 || n/2 != rb.Stats().Flushes {
		t.Fatalf("%d write round trips for %d writes; want two each", n, rb.Stats().Flushes)
	}
}

// A call the health breaker refuses never reaches Redis, so it is not a round trip.
func TestRefusedCallsAreNotRoundTrips(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	client, err := redisclient.Open(redisclient.Options{URL: srv.URL(), CallTimeout: 200 * time.Millisecond,
		DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	rl := newLimiter(t, client, Options{})
	if _, err := rl.Allow(ctx, "k", 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	testenv.Eventually(t, 10*time.Second, "the breaker open", func() bool {
		_, _ = rl.Allow(ctx, "k", 10, time.Minute)
		return client.Breaker.Open()
	})
	trips := rl.Stats().ScriptRoundTrips
	for range 5 {
		if _, err := rl.Allow(ctx, "k", 10, time.Minute); !errors.Is(err, redisclient.ErrUnavailable) {
			t.Fatalf("with the breaker open: %v, want ErrUnavailable", err)
		}
	}
	if n := rl.Stats().ScriptRoundTrips; n != trips {
		t.Fatalf("%d round trips counted for 5 calls the breaker refused", n-trips)
	}
}
