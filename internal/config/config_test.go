package config_test

import (
	"cmp"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/config"
)

// env is a Lookup over a map; required variables are set unless a case removes them.
func env(overrides map[string]string) config.Lookup {
	vars := map[string]string{
		"DATABASE_URL": "postgres://authgate@db:5432/dify",
		"REDIS_URL":    "redis://redis:6379/0",
		"SECRET_KEY":   testSecretKey,
	}
	for k, v := range overrides {
		vars[k] = v
	}
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// wantVarError checks err is a *config.Error for name, on one line that starts with the variable's name.
func wantVarError(t *testing.T, err error, name string) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *config.Error naming %s", err, name)
	}
	if ce.Var != name || !strings.HasPrefix(err.Error(), name+": ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %q (var %s), want one line naming %s", err, ce.Var, name)
	}
}

func TestExtauthzDefaults(t *testing.T) {
	c, warnings, err := config.LoadExtauthz(env(nil))
	if err != nil || len(warnings) != 0 {
		t.Fatalf("LoadExtauthz = %v, warnings %v", err, warnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"DATABASE_URL", c.Database.URL, "postgres://authgate@db:5432/dify"},
		{"REDIS_URL", c.Redis.URL, "redis://redis:6379/0"},
		{"ADMIN_ADDR", c.AdminAddr, ":9090"},
		{"LOG_LEVEL", c.LogLevel, "info"},
		{"OAUTH_TTL_DAYS", c.TTL.Days, 14},
		{"ENTERPRISE_ENABLED", c.EnterpriseEnabled, false},
		{"ENTERPRISE_API_URL", c.EnterpriseAPIURL, ""},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", c.OTLPEndpoint, ""},
		{"EXTAUTHZ_GRPC_ADDR", c.GRPCAddr, ":9191"},
		{"ROUTES_FILE", c.RoutesFile, ""},
		{"ENABLE_OAUTH_BEARER", c.EnableOAuthBearer, true},
		{"OPENAPI_RATE_LIMIT_PER_TOKEN", c.RateLimitPerToken, 60},
		{"RATE_LIMIT_FAIL_OPEN", c.RateLimitFailOpen, true},
		{"INVALID_BEARER_PER_IP_PER_MINUTE", c.InvalidBearerPerIPPerMin, 60},
		{"TOKEN_CACHE_TTL", c.TokenCacheTTL, 60 * time.Second},
		{"TOKEN_LAST_USED_INTERVAL", c.TokenLastUsedInterval, 5 * time.Minute},
		{"MEMBERSHIP_ENFORCED_UPSTREAM", c.MembershipEnforcedUpstream, false},
		{"CHECK_TIMEOUT", c.CheckTimeout, 150 * time.Millisecond},
		{"FORWARD_AUTHORIZATION", c.ForwardAuthorization, true},
		{"GRPC_MAX_CONNECTION_AGE", c.MaxConnectionAge, 5 * time.Minute},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 20 * time.Second},
		{"SHUTDOWN_DRAIN_DELAY", c.ShutdownDrainDelay, 12 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s default = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestDeviceflowDefaults(t *testing.T) {
	c, warnings, err := config.LoadDeviceflow(env(nil))
	if err != nil || len(warnings) != 0 {
		t.Fatalf("LoadDeviceflow = %v, warnings %v", err, warnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"SECRET_KEY", c.SecretKey, testSecretKey},
		{"DEVICEFLOW_ADDR", c.Addr, ":8080"},
		{"ADMIN_ADDR", c.AdminAddr, ":9090"},
		{"OAUTH_TTL_DAYS", c.TTL.Days, 14},
		{"CONSOLE_WEB_URL", c.ConsoleWebURL, "http://localhost:3000"},
		{"CONSOLE_API_URL", c.ConsoleAPIURL, "http://localhost:5001"},
		{"COOKIE_DOMAIN", c.CookieDomain, ""},
		{"DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR", c.ApprovePerHour, 10},
		{"TRUSTED_PROXY_HOPS", c.TrustedProxyHops, 0},
		{"OAUTH_ACCESS_TOKEN_RETENTION_DAYS", c.RetentionDays, 30},
		{"PRUNE_INTERVAL", c.PruneInterval, 24 * time.Hour},
		{"ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", c.PruneEnabled, true},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 20 * time.Second},
		{"TOKEN_CACHE_TTL", c.TokenCacheTTL, 60 * time.Second},
		{"TOKEN_LAST_USED_INTERVAL", c.TokenLastUsedInterval, 5 * time.Minute},
		{"ENTERPRISE_ENABLED", c.EnterpriseEnabled, false},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s default = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if !slices.Equal(c.KnownClientIDs, []string{"difyctl"}) {
		t.Errorf("OPENAPI_KNOWN_CLIENT_IDS default = %v, want [difyctl]", c.KnownClientIDs)
	}
}

func TestValuesAreRead(t *testing.T) {
	c, _, err := config.LoadDeviceflow(env(map[string]string{
		"OPENAPI_KNOWN_CLIENT_IDS": " difyctl, ,my-cli ",
		"CONSOLE_WEB_URL":          "https://console.example.com/",
		"ENTERPRISE_ENABLED":       "true",
		"ENTERPRISE_API_URL":       "http://enterprise:8082",
		"TRUSTED_PROXY_HOPS":       "1",
		"PRUNE_INTERVAL":           "90m",
		"LOG_LEVEL":                "debug",
		"OAUTH_TTL_DAYS":           " 30 ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.KnownClientIDs, []string{"difyctl", "my-cli"}) || c.ConsoleWebURL != "https://console.example.com" ||
		!c.EnterpriseEnabled || c.EnterpriseAPIURL != "http://enterprise:8082" || c.TrustedProxyHops != 1 ||
		c.PruneInterval != 90*time.Minute || c.LogLevel != "debug" || c.TTL.Days != 30 {
		t.Fatalf("config = %+v", c)
	}
	x, _, err := config.LoadExtauthz(env(map[string]string{"OPENAPI_RATE_LIMIT_PER_TOKEN": "0", "CHECK_TIMEOUT": "120ms"}))
	if err != nil || x.RateLimitPerToken != 0 || x.CheckTimeout != 120*time.Millisecond {
		t.Fatalf("extauthz = %+v, %v", x, err)
	}
}

func TestMissingRequiredVariables(t *testing.T) {
	for _, name := range []string{"DATABASE_URL", "REDIS_URL"} {
		for _, value := range []string{"", "   "} {
			lookup := env(map[string]string{name: value})
			_, _, err := config.LoadExtauthz(lookup)
			wantVarError(t, err, name)
			_, _, err = config.LoadDeviceflow(lookup)
			wantVarError(t, err, name)
		}
		unset := env(nil)
		lookup := func(n string) (string, bool) {
			if n == name {
				return "", false
			}
			return unset(n)
		}
		_, _, err := config.LoadExtauthz(lookup)
		wantVarError(t, err, name)
	}
	_, _, err := config.LoadDeviceflow(env(map[string]string{"SECRET_KEY": ""}))
	wantVarError(t, err, "SECRET_KEY")
	if _, _, err := config.LoadExtauthz(env(map[string]string{"SECRET_KEY": ""})); err != nil {
		t.Fatalf("extauthz does not need SECRET_KEY: %v", err)
	}
	_, err = config.LoadMaintenance(env(map[string]string{"DATABASE_URL": ""}))
	wantVarError(t, err, "DATABASE_URL")
	if _, err := config.LoadMaintenance(env(map[string]string{"REDIS_URL": "", "SECRET_KEY": ""})); err != nil {
		t.Fatalf("maintenance needs only the database: %v", err)
	}
}

func TestInvalidValuesNameTheirVariable(t *testing.T) {
	type loader func(config.Lookup) error
	extauthz := func(l config.Lookup) error { _, _, err := config.LoadExtauthz(l); return err }
	deviceflow := func(l config.Lookup) error { _, _, err := config.LoadDeviceflow(l); return err }
	maintenance := func(l config.Lookup) error { _, err := config.LoadMaintenance(l); return err }
	both := []loader{extauthz, deviceflow}
	cases := []struct {
		name, value string
		loaders     []loader
		wantVar     string // "" = name
	}{
		{"LOG_LEVEL", "verbose", both, ""},
		{"ENTERPRISE_ENABLED", "maybe", both, ""},
		{"ENTERPRISE_API_URL", "ftp://enterprise", both, ""},
		{"ENTERPRISE_API_URL", "enterprise:8082", both, ""},
		{"OAUTH_TTL_DAYS", "abc", both, ""},
		{"OAUTH_TTL_DAYS", "14d", both, ""},
		{"ENABLE_OAUTH_BEARER", "nah", []loader{extauthz}, ""},
		{"OPENAPI_RATE_LIMIT_PER_TOKEN", "sixty", []loader{extauthz}, ""},
		{"OPENAPI_RATE_LIMIT_PER_TOKEN", "-1", []loader{extauthz}, ""},
		{"RATE_LIMIT_FAIL_OPEN", "2", []loader{extauthz}, ""},
		{"INVALID_BEARER_PER_IP_PER_MINUTE", "1.5", []loader{extauthz}, ""},
		{"TOKEN_CACHE_TTL", "60", both, ""}, // a duration needs its unit
		{"TOKEN_CACHE_TTL", "-1s", both, ""},
		{"TOKEN_LAST_USED_INTERVAL", "300", both, ""}, // a duration needs its unit
		{"TOKEN_LAST_USED_INTERVAL", "-5m", both, ""},
		{"MEMBERSHIP_ENFORCED_UPSTREAM", "yes", []loader{extauthz}, ""},
		{"CHECK_TIMEOUT", "0s", []loader{extauthz}, ""},
		{"FORWARD_AUTHORIZATION", "off", []loader{extauthz}, ""},
		{"GRPC_MAX_CONNECTION_AGE", "forever", []loader{extauthz}, ""},
		{"SHUTDOWN_TIMEOUT", "soon", both, ""},
		{"CONSOLE_WEB_URL", "localhost:3000", []loader{deviceflow}, ""},
		{"CONSOLE_API_URL", "/console/api", []loader{deviceflow}, ""},
		{"OPENAPI_KNOWN_CLIENT_IDS", " , ", []loader{deviceflow}, ""},
		{"DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR", "0", []loader{deviceflow}, ""},
		{"TRUSTED_PROXY_HOPS", "17", []loader{deviceflow}, ""},
		{"TRUSTED_PROXY_HOPS", "-1", []loader{deviceflow}, ""},
		{"OAUTH_ACCESS_TOKEN_RETENTION_DAYS", "0", []loader{deviceflow, maintenance}, ""},
		{"OAUTH_ACCESS_TOKEN_RETENTION_DAYS", "thirty", []loader{deviceflow, maintenance}, ""},
		{"PRUNE_INTERVAL", "daily", []loader{deviceflow}, ""},
		{"ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", "sometimes", []loader{deviceflow}, ""},
		{"ENTERPRISE_ENABLED", "true", both, "ENTERPRISE_API_URL"}, // EE needs the enterprise service
	}
	for _, c := range cases {
		want := cmp.Or(c.wantVar, c.name)
		for i, load := range c.loaders {
			err := load(env(map[string]string{c.name: c.value}))
			if err == nil {
				t.Errorf("%s=%q (loader %d): accepted", c.name, c.value, i)
				continue
			}
			t.Run(c.name+"="+c.value, func(t *testing.T) { wantVarError(t, err, want) })
		}
	}
}

func TestTTLDaysOutOfRangeIsClampedWithAWarning(t *testing.T) {
	cases := []struct {
		raw  string
		days int
	}{{"0", 1}, {"-3", 1}, {"400", 365}}
	for _, c := range cases {
		x, warnings, err := config.LoadExtauthz(env(map[string]string{"OAUTH_TTL_DAYS": c.raw}))
		if err != nil || x.TTL.Days != c.days {
			t.Fatalf("OAUTH_TTL_DAYS=%s: %d days, %v; want %d", c.raw, x.TTL.Days, err, c.days)
		}
		if len(warnings) != 1 || !strings.HasPrefix(warnings[0], "OAUTH_TTL_DAYS: ") {
			t.Fatalf("OAUTH_TTL_DAYS=%s: warnings %q, want one naming the variable", c.raw, warnings)
		}
		d, warnings, err := config.LoadDeviceflow(env(map[string]string{"OAUTH_TTL_DAYS": c.raw}))
		if err != nil || d.TTL.Days != c.days || len(warnings) != 1 {
			t.Fatalf("deviceflow OAUTH_TTL_DAYS=%s: %d days, %v, %q", c.raw, d.TTL.Days, err, warnings)
		}
	}
}

func TestFirstErrorWins(t *testing.T) {
	// Several problems: the process stops on one line, for the first variable read.
	_, _, err := config.LoadDeviceflow(env(map[string]string{"DATABASE_URL": "", "SECRET_KEY": "", "LOG_LEVEL": "loud"}))
	wantVarError(t, err, "DATABASE_URL")
}

// A rejected URL is quoted in the error to help the operator, but never with the password of its user info.
func TestRejectedURLsKeepPasswordsOut(t *testing.T) {
	const password = "s3cret-pw"
	for _, v := range []string{
		"ftp://user:" + password + "@enterprise:8082",  // parses: shown redacted
		"http://user:" + password + "@enterprise:port", // does not parse
		"user:" + password + "@enterprise",
	} {
		_, _, err := config.LoadExtauthz(env(map[string]string{"ENTERPRISE_API_URL": v}))
		if err == nil {
			t.Errorf("ENTERPRISE_API_URL=%q accepted", v)
			continue
		}
		wantVarError(t, err, "ENTERPRISE_API_URL")
		if strings.Contains(err.Error(), password) {
			t.Errorf("ENTERPRISE_API_URL=%q: the error shows the password: %v", v, err)
		}
	}
}

// TestLastUsedInterval: 0 turns last-used writes off, in either service.
func TestLastUsedInterval(t *testing.T) {
	for _, v := range []string{"0", "0s"} {
		e, _, err := config.LoadExtauthz(env(map[string]string{"TOKEN_LAST_USED_INTERVAL": v}))
		d, _, derr := config.LoadDeviceflow(env(map[string]string{"TOKEN_LAST_USED_INTERVAL": v}))
		if err != nil || derr != nil || e.TokenLastUsedInterval != 0 || d.TokenLastUsedInterval != 0 {
			t.Fatalf("TOKEN_LAST_USED_INTERVAL=%s: %v (%v), %v (%v); want 0", v, e.TokenLastUsedInterval, err,
				d.TokenLastUsedInterval, derr)
		}
	}
	e, _, err := config.LoadExtauthz(env(map[string]string{"TOKEN_LAST_USED_INTERVAL": "90s"}))
	if err != nil || e.TokenLastUsedInterval != 90*time.Second {
		t.Fatalf("TOKEN_LAST_USED_INTERVAL=90s: %v, %v", e.TokenLastUsedInterval, err)
	}
}
