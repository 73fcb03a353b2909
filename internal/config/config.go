package config

import (
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

// Common is configuration both services read.
type Common struct {
	Database  Database // DATABASE_URL, or Dify's DB_* variables
	Redis     Redis    // REDIS_URL, or Dify's REDIS_* variables (standalone, Sentinel or Cluster)
	AdminAddr string   // ADMIN_ADDR
	LogLevel  string   // LOG_LEVEL: debug, info, warn, error
	TTL       tokens.TTLPolicy

	EnterpriseEnabled   bool   // ENTERPRISE_ENABLED
	EnterpriseAPIURL    string // ENTERPRISE_API_URL
	EnterpriseSecretKey string // ENTERPRISE_API_SECRET_KEY

	OTLPEndpoint string // OTEL_EXPORTER_OTLP_ENDPOINT; empty disables trace export

	// TokenLastUsedInterval (TOKEN_LAST_USED_INTERVAL) is the least time between two writes of one token's last_used_at
	// by one replica; 0 turns the writes off.
	TokenLastUsedInterval time.Duration
}

func readCommon(r *reader) Common {
	c := Common{
		Database:            readDatabase(r),
		Redis:               readRedis(r),
		AdminAddr:           r.String("ADMIN_ADDR", ":9090"),
		LogLevel:            r.String("LOG_LEVEL", "info"),
		EnterpriseEnabled:   r.Bool("ENTERPRISE_ENABLED", false),
		EnterpriseAPIURL:    r.URL("ENTERPRISE_API_URL", ""),
		EnterpriseSecretKey: r.String("ENTERPRISE_API_SECRET_KEY", ""),
		OTLPEndpoint:        r.String("OTEL_EXPORTER_OTLP_ENDPOINT", ""),

		TokenLastUsedInterval: r.DurationOrOff("TOKEN_LAST_USED_INTERVAL", 5*time.Minute),
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		r.fail("LOG_LEVEL", "must be one of debug, info, warn, error: %q", c.LogLevel)
	}
	if c.EnterpriseEnabled && c.EnterpriseAPIURL == "" {
		r.fail("ENTERPRISE_API_URL", "required when ENTERPRISE_ENABLED=true")
	}
	raw, _ := r.raw("OAUTH_TTL_DAYS")
	policy, warning, err := tokens.ParseTTLDays(raw)
	if err != nil {
		r.fail("OAUTH_TTL_DAYS", "%v", err)
	}
	if warning != "" {
		r.warn("OAUTH_TTL_DAYS", warning)
	}
	c.TTL = policy
	return c
}

// Extauthz is the configuration of cmd/extauthz.
type Extauthz struct {
	Common
	GRPCAddr                   string        // EXTAUTHZ_GRPC_ADDR
	RoutesFile                 string        // ROUTES_FILE; empty = the embedded default policy
	EnableOAuthBearer          bool          // ENABLE_OAUTH_BEARER
	RateLimitPerToken          int           // OPENAPI_RATE_LIMIT_PER_TOKEN; 0 disables
	RateLimitFailOpen          bool          // RATE_LIMIT_FAIL_OPEN
	RateLimitMode              string        // RATE_LIMIT_MODE: exact or batched
	RateLimitBatchInterval     time.Duration // RATE_LIMIT_BATCH_INTERVAL
	RateLimitBatchAllowance    int           // RATE_LIMIT_BATCH_ALLOWANCE
	InvalidBearerPerIPPerMin   int           // INVALID_BEARER_PER_IP_PER_MINUTE; 0 disables
	TokenCacheTTL              time.Duration // TOKEN_CACHE_TTL
	MembershipEnforcedUpstream bool          // MEMBERSHIP_ENFORCED_UPSTREAM
	CheckTimeout               time.Duration // CHECK_TIMEOUT
	ForwardAuthorization       bool          // FORWARD_AUTHORIZATION
	MaxConnectionAge           time.Duration // GRPC_MAX_CONNECTION_AGE
	ShutdownTimeout            time.Duration // SHUTDOWN_TIMEOUT
	// ShutdownDrainDelay (SHUTDOWN_DRAIN_DELAY) is how long a stopping extauthz keeps answering Checks after it reports
	// NOT_SERVING, before it stops accepting them: the proxies take that long to drop it (Envoy after unhealthy_threshold
	// failed health checks). 0 stops at once.
	ShutdownDrainDelay time.Duration
	TrustedProxyHops   int               // TRUSTED_PROXY_HOPS: X-Forwarded-For hops to trust for the per-IP budget
	IdentityAssertion  IdentityAssertion // IDENTITY_ASSERTION*: the signed identity for the upstream
}

// DefaultShutdownDrainDelay covers envoy/envoy.yaml's active health check of the extauthz cluster, the slowest way a
// proxy notices a replica going: unhealthy_threshold (2) failed checks, interval (5 s) apart, the first sent up to an
// interval after the replica went NOT_SERVING, plus one check's timeout (1 s) and a second of margin.
const DefaultShutdownDrainDelay = 2*5*time.Second + time.Second + time.Second

// LoadExtauthz reads the extauthz configuration. Warnings (clamped values) are for the caller to log.
func LoadExtauthz(lookup Lookup) (Extauthz, []string, error) {
	r := &reader{lookup: lookup}
	c := Extauthz{
		Common:                     readCommon(r),
		GRPCAddr:                   r.String("EXTAUTHZ_GRPC_ADDR", ":9191"),
		RoutesFile:                 r.String("ROUTES_FILE", ""),
		EnableOAuthBearer:          r.Bool("ENABLE_OAUTH_BEARER", true),
		RateLimitPerToken:          r.Int("OPENAPI_RATE_LIMIT_PER_TOKEN", 60, 0, 1_000_000),
		RateLimitFailOpen:          r.Bool("RATE_LIMIT_FAIL_OPEN", true),
		InvalidBearerPerIPPerMin:   r.Int("INVALID_BEARER_PER_IP_PER_MINUTE", 60, 0, 1_000_000),
		TokenCacheTTL:              r.Duration("TOKEN_CACHE_TTL", 60*time.Second),
		MembershipEnforcedUpstream: r.Bool("MEMBERSHIP_ENFORCED_UPSTREAM", false),
		CheckTimeout:               r.Duration("CHECK_TIMEOUT", 150*time.Millisecond),
		ForwardAuthorization:       r.Bool("FORWARD_AUTHORIZATION", true),
		MaxConnectionAge:           r.Duration("GRPC_MAX_CONNECTION_AGE", 5*time.Minute),
		ShutdownTimeout:            r.Duration("SHUTDOWN_TIMEOUT", 20*time.Second),
		ShutdownDrainDelay:         r.DurationOrOff("SHUTDOWN_DRAIN_DELAY", DefaultShutdownDrainDelay),
		TrustedProxyHops:           r.Int("TRUSTED_PROXY_HOPS", 0, 0, 16),
	}
	c.readRateLimitMode(r)
	c.IdentityAssertion = readIdentityAssertion(r)
	return c, r.warnings, r.err
}

// Deviceflow is the configuration of cmd/deviceflow.
type Deviceflow struct {
	Common
	Addr             string        // DEVICEFLOW_ADDR
	SecretKey        string        // SECRET_KEY, required (Dify's: signs console sessions, CSRF tokens and SSO envelopes)
	ConsoleWebURL    string        // CONSOLE_WEB_URL
	ConsoleAPIURL    string        // CONSOLE_API_URL
	CookieDomain     string        // COOKIE_DOMAIN
	KnownClientIDs   []string      // OPENAPI_KNOWN_CLIENT_IDS
	ApprovePerHour   int           // DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR
	TrustedProxyHops int           // TRUSTED_PROXY_HOPS
	RetentionDays    int           // OAUTH_ACCESS_TOKEN_RETENTION_DAYS
	PruneInterval    time.Duration // PRUNE_INTERVAL
	PruneEnabled     bool          // ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK
	ShutdownTimeout  time.Duration // SHUTDOWN_TIMEOUT
	// TokenCacheTTL is extauthz's TOKEN_CACHE_TTL: revocation tombstones must outlive cached entries.
	TokenCacheTTL time.Duration
	GitHub        GitHub // GITHUB_*: sign-in with GitHub on the /device page
}

// LoadDeviceflow reads the deviceflow configuration. Warnings (clamped values) are for the caller to log. A SECRET_KEY
// that is Dify's published sample or shorter than MinSecretKeyLen is refused, unless opts has DevStack.
func LoadDeviceflow(lookup Lookup, opts ...LoadOption) (Deviceflow, []string, error) {
	o := applyOptions(opts)
	r := &reader{lookup: lookup}
	c := Deviceflow{
		Common:           readCommon(r),
		Addr:             r.String("DEVICEFLOW_ADDR", ":8080"),
		SecretKey:        r.secretKey("SECRET_KEY", o),
		ConsoleWebURL:    r.URL("CONSOLE_WEB_URL", "http://localhost:3000"),
		ConsoleAPIURL:    r.URL("CONSOLE_API_URL", "http://localhost:5001"),
		CookieDomain:     r.String("COOKIE_DOMAIN", ""),
		KnownClientIDs:   r.List("OPENAPI_KNOWN_CLIENT_IDS", []string{"difyctl"}),
		ApprovePerHour:   r.Int("DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR", 10, 1, 1_000_000),
		TrustedProxyHops: r.Int("TRUSTED_PROXY_HOPS", 0, 0, 16),
		RetentionDays:    r.Int("OAUTH_ACCESS_TOKEN_RETENTION_DAYS", 30, 1, 3650),
		PruneInterval:    r.Duration("PRUNE_INTERVAL", 24*time.Hour),
		PruneEnabled:     r.Bool("ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", true),
		ShutdownTimeout:  r.Duration("SHUTDOWN_TIMEOUT", 20*time.Second),
		TokenCacheTTL:    r.Duration("TOKEN_CACHE_TTL", 60*time.Second),
		GitHub:           readGitHub(r),
	}
	return c, r.warnings, r.err
}

// Maintenance is what `deviceflow migrate` and `deviceflow prune` read: they need the database and nothing else.
type Maintenance struct {
	Database      Database // DATABASE_URL, or Dify's DB_* variables
	RetentionDays int      // OAUTH_ACCESS_TOKEN_RETENTION_DAYS
	LogLevel      string   // LOG_LEVEL
	Warnings      []string // adjusted or ignored values, for the caller to log
}

// LoadMaintenance reads the configuration of deviceflow's maintenance subcommands.
func LoadMaintenance(lookup Lookup) (Maintenance, error) {
	r := &reader{lookup: lookup}
	c := Maintenance{
		Database:      readDatabase(r),
		RetentionDays: r.Int("OAUTH_ACCESS_TOKEN_RETENTION_DAYS", 30, 1, 3650),
		LogLevel:      r.String("LOG_LEVEL", "info"),
	}
	c.Warnings = r.warnings
	return c, r.err
}
