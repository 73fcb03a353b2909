// Package deviceflow is the OAuth 2.0 Device Authorization Grant service (RFC 8628): device codes in Redis, approval by a
// Dify console session or an enterprise SSO subject, minting at the poll, token self-service and revocation.
package deviceflow

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokens"
)

// Deps are the adapters the server talks to.
type Deps struct {
	Tokens    tokens.Store
	Directory directory.Directory
	// Redis must honour context deadlines (redisclient.Open's client does): deviceflow bounds every call with one.
	Redis   redis.UniversalClient
	Limiter Limiter
	Revoker Revoker
	// Enterprise is the EE client; nil on CE (the SSO routes then answer 404).
	Enterprise Enterprise
	// GitHub signs people in with GitHub for the /device page; nil turns GitHub sign-in off (its routes answer 404). Start
	// builds one from GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET when they are set.
	GitHub GitHub
	// LastUsed notes the token of each request a bearer authenticates, for last_used_at; nil records nothing. Start
	// builds one from TOKEN_LAST_USED_INTERVAL when it is nil.
	LastUsed *lastused.Recorder
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Meter records deviceflow's metrics; nil means the process's global meter provider.
	Meter metric.Meter
}

// Config is what the server needs from config.Deviceflow.
type Config struct {
	SecretKey         string // SECRET_KEY: console sessions, CSRF tokens, SSO envelopes
	ConsoleWebURL     string // CONSOLE_WEB_URL, no trailing slash
	ConsoleAPIURL     string // CONSOLE_API_URL, no trailing slash
	CookieDomain      string // COOKIE_DOMAIN
	KnownClientIDs    []string
	ApprovePerHour    int // DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR
	TrustedProxyHops  int // TRUSTED_PROXY_HOPS
	TTL               tokens.TTLPolicy
	EnterpriseEnabled bool
}

// Server serves the device-flow HTTP API, the SSO branch and the /device page.
type Server struct {
	deps    Deps
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	state   *State
	clients map[string]bool
	handler http.Handler
	// throttle keeps a dependency outage from logging a line per request (failed requests, unpublished revocations).
	throttle *telemetry.Throttle
	metrics  *metrics
	// revokeMisses holds hashes RFC 7009 revocation found neither live nor recorded (revoke.go).
	revokeMisses *expirable.LRU[string, struct{}]
}

// New validates cfg and builds the server.
func New(deps Deps, cfg Config) (*Server, error) {
	switch {
	case deps.Tokens == nil || deps.Directory == nil || deps.Redis == nil || deps.Limiter == nil || deps.Revoker == nil:
		return nil, errors.New("deviceflow: Tokens, Directory, Redis, Limiter and Revoker are required")
	case cfg.SecretKey == "":
		return nil, errors.New("deviceflow: SecretKey is required")
	case len(cfg.KnownClientIDs) == 0:
		return nil, errors.New("deviceflow: KnownClientIDs is empty")
	case cfg.TTL.Days <= 0:
		return nil, fmt.Errorf("deviceflow: TTL of %d days", cfg.TTL.Days)
	case cfg.EnterpriseEnabled && deps.Enterprise == nil:
		return nil, errors.New("deviceflow: EnterpriseEnabled without an Enterprise client")
	}
	if cfg.ApprovePerHour <= 0 {
		cfg.ApprovePerHour = 10
	}
	s := &Server{deps: deps, cfg: cfg, log: deps.Logger, now: deps.Now, clients: map[string]bool{},
		throttle: telemetry.NewThrottle(0), revokeMisses: expirable.NewLRU[string, struct{}](revokeMissEntries, nil, revokeMissTTL)}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.metrics, err = newMetrics(deps.Meter); err != nil {
		return nil, fmt.Errorf("deviceflow: metrics: %w", err)
	}
	// Postgres failures are marked as such wherever they surface (see deps.go).
	s.deps.Tokens = postgresTokens{deps.Tokens}
	s.deps.Directory = postgresDirectory{deps.Directory}
	for _, id := range cfg.KnownClientIDs {
		s.clients[id] = true
	}
	s.state = NewState(deps.Redis)
	s.handler = securityHeaders(limitBody(jsonFallback(s.routes())))
	return s, nil
}

// Handler is the HTTP API, including the unprefixed /device page and RFC 8414 metadata.
func (s *Server) Handler() http.Handler { return s.handler }

// State exposes the device-authorization state, for the SSO branch and tests.
func (s *Server) State() *State { return s.state }
