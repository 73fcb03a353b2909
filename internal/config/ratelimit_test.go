package config_test

import (
	"testing"
	"time"

	"github.com/authgate/authgate/internal/config"
)

func TestRateLimitModeDefaults(t *testing.T) {
	c, _, err := config.LoadExtauthz(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimitMode != "exact" || c.RateLimitBatchInterval != 100*time.Millisecond || c.RateLimitBatchAllowance != 1 {
		t.Fatalf("mode %q, interval %v, allowance %d; want exact, 100ms, 1 (60/min for 100 ms, rounded up)",
			c.RateLimitMode, c.RateLimitBatchInterval, c.RateLimitBatchAllowance)
	}
	c, _, err = config.LoadExtauthz(env(map[string]string{"RATE_LIMIT_MODE": "batched", "RATE_LIMIT_BATCH_INTERVAL": "500ms",
		"OPENAPI_RATE_LIMIT_PER_TOKEN": "1200"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimitMode != "batched" || c.RateLimitBatchInterval != 500*time.Millisecond || c.RateLimitBatchAllowance != 10 {
		t.Fatalf("mode %q, interval %v, allowance %d; want batched, 500ms, 10 (1200/min for 500 ms)", c.RateLimitMode,
			c.RateLimitBatchInterval, c.RateLimitBatchAllowance)
	}
	c, _, err = config.LoadExtauthz(env(map[string]string{"OPENAPI_RATE_LIMIT_PER_TOKEN": "1000000",
		"RATE_LIMIT_BATCH_ALLOWANCE": "40"}))
	if err != nil || c.RateLimitBatchAllowance != 40 {
		t.Fatalf("allowance %d, %v; want 40 as set", c.RateLimitBatchAllowance, err)
	}
	if c, _, _ := config.LoadExtauthz(env(map[string]string{"OPENAPI_RATE_LIMIT_PER_TOKEN": "1000000"})); c.RateLimitBatchAllowance != 1000 {
		t.Fatalf("default allowance for a limit of 1000000: %d, want the cap 1000", c.RateLimitBatchAllowance)
	}
}

func TestBadRateLimitModeStopsStartUp(t *testing.T) {
	for _, c := range []struct{ name, value string }{
		{"RATE_LIMIT_MODE", "fast"},
		{"RATE_LIMIT_MODE", "Exact"},
		{"RATE_LIMIT_BATCH_INTERVAL", "0s"},
		{"RATE_LIMIT_BATCH_INTERVAL", "-100ms"},
		{"RATE_LIMIT_BATCH_INTERVAL", "100"},
		{"RATE_LIMIT_BATCH_INTERVAL", "2m"},
		{"RATE_LIMIT_BATCH_ALLOWANCE", "0"},
		{"RATE_LIMIT_BATCH_ALLOWANCE", "1001"},
		{"RATE_LIMIT_BATCH_ALLOWANCE", "six"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			_, _, err := config.LoadExtauthz(env(map[string]string{c.name: c.value}))
			wantVarError(t, err, c.name)
		})
	}
}
