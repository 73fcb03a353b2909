package pipeline

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"go.opentelemetry.io/otel/metric"

	"github.com/authgate/authgate/internal/telemetry"
)

// Options are the pipeline's settings (from config.Extauthz).
type Options struct {
	EnableOAuthBearer          bool          // ENABLE_OAUTH_BEARER
	RateLimitPerToken          int           // OPENAPI_RATE_LIMIT_PER_TOKEN; 0 disables
	RateLimitFailOpen          bool          // RATE_LIMIT_FAIL_OPEN
	InvalidBearerPerIPPerMin   int           // INVALID_BEARER_PER_IP_PER_MINUTE; 0 disables
	MembershipEnforcedUpstream bool          // MEMBERSHIP_ENFORCED_UPSTREAM
	CheckTimeout               time.Duration // CHECK_TIMEOUT
	ForwardAuthorization       bool          // FORWARD_AUTHORIZATION
	EnterpriseEnabled          bool          // ENTERPRISE_ENABLED
	// RedisCallTimeout bounds each limiter and cache call, so a Redis that hangs before the health breaker notices costs a
	// fraction of the Check deadline and the fail-open path and the Postgres fallback still have time to answer.
	// Default CheckTimeout/2.
	RedisCallTimeout time.Duration
	// SuspectLookupsPerSecond is the suspect lane's rate: Postgres lookups per second, per process, shared by every address
	// over its invalid-bearer budget. Default 20.
	SuspectLookupsPerSecond int
	// AppCacheTTL is how long an app and its tenant are reused from memory, so warm Checks make no Postgres call.
	AppCacheTTL time.Duration
}

// Deps are the pipeline's collaborators. Enterprise is nil on CE.
type Deps struct {
	Limiter    RateLimiter
	Cache      TokenCache
	Tokens     TokenStore
	Directory  Directory
	Enterprise Enterprise
	// ClientBucket maps a client address to its rate-limit bucket (clientip.Bucket: IPv6 by /64).
	ClientBucket func(netip.Addr) string
	// RedisHealthy reports the Redis client's health breaker (redisclient): while it says false, a Check makes no Redis call
	// and builds no Redis deadline. nil: always true.
	RedisHealthy func() bool
	// LogThrottle summarises dependency-failure lines, so an outage logs a handful of lines, not one per Check. nil: one
	// line per kind per 10 s.
	LogThrottle *telemetry.Throttle
	Logger      *slog.Logger
	Meter       metric.Meter
	Now         func() time.Time
}

// Pipeline decides Requests (docs/architecture.md, "A Check"). It is safe for concurrent use.
type Pipeline struct {
	policy  *Policy
	opts    Options
	deps    Deps
	metrics *metrics
	apps    *expirable.LRU[string, appRecord]
	acl     *expirable.LRU[string, aclVerdict]

	negative   *expirable.LRU[string, struct{}] // hashes refused within negativeTTL
	budget     *localBudget
	lane       *suspectLane
	admissions admissions
	flights    flights

	fills sync.WaitGroup // cache fills still being written after their Checks answered

	localLimiter   LocalRateLimiter  // deps.Limiter, when it can decide from memory
	tokenAccounts  TokenAccountStore // deps.Tokens, when it reads a row with its account
	limiterBounded bool              // deps.Limiter bounds its own Redis calls
	rateLimitValue string            // the RateLimit-Limit header
}

// New builds a pipeline over a validated policy.
func New(policy *Policy, opts Options, deps Deps) (*Pipeline, error) {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.RedisHealthy == nil {
		deps.RedisHealthy = func() bool { return true }
	}
	if deps.LogThrottle == nil {
		deps.LogThrottle = telemetry.NewThrottle(0)
	}
	m, err := newMetrics(deps.Meter)
	if err != nil {
		return nil, err
	}
	if opts.RedisCallTimeout <= 0 {
		opts.RedisCallTimeout = opts.CheckTimeout / 2
	}
	if opts.AppCacheTTL <= 0 {
		opts.AppCacheTTL = 5 * time.Second
	}
	if opts.SuspectLookupsPerSecond <= 0 {
		opts.SuspectLookupsPerSecond = defaultSuspectLookupsPerSecond
	}
	local, _ := deps.Limiter.(LocalRateLimiter)
	bounded, _ := deps.Limiter.(CallBoundedRateLimiter)
	tokenAccounts, _ := deps.Tokens.(TokenAccountStore)
	return &Pipeline{
		localLimiter:   local,
		tokenAccounts:  tokenAccounts,
		limiterBounded: bounded != nil && bounded.BoundsCalls(),
		rateLimitValue: strconv.Itoa(opts.RateLimitPerToken),
		policy:         policy,
		opts:           opts,
		deps:           deps,
		metrics:        m,
		apps:           expirable.NewLRU[string, appRecord](appEntries, nil, opts.AppCacheTTL),
		acl:            expirable.NewLRU[string, aclVerdict](aclEntries, nil, aclAllowTTL),
		negative:       expirable.NewLRU[string, struct{}](negativeEntries, nil, negativeTTL),
		budget:         newLocalBudget(opts.InvalidBearerPerIPPerMin, invalidBearerWindow, deps.Now),
		lane:           newSuspectLane(opts.SuspectLookupsPerSecond, deps.Now),
	}, nil
}

// Check decides one request. It never fails: a decision that cannot be made within CHECK_TIMEOUT, or with a dependency
// down, is a 503 deny.
func (p *Pipeline) Check(ctx context.Context, req Request) Decision {
	start := time.Now()
	if p.opts.CheckTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.opts.CheckTimeout)
		defer cancel()
	}
	d := p.decide(ctx, &req)
	if !d.Allow && ctx.Err() != nil && d.Code != CodeAuthUnavailable {
		// A step that observed the deadline as "no such row" must not turn an outage into a definite answer.
		d = denyUnavailable()
	}
	p.finish(&req, &d)
	p.metrics.record(ctx, d, time.Since(start))
	return d
}

// finish fills in what every decision carries: header removals on allow, metadata on both.
func (p *Pipeline) finish(req *Request, d *Decision) {
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	if d.Route != "" {
		d.Metadata["route"] = d.Route
	}
	if req.RequestID != "" {
		d.Metadata["request_id"] = req.RequestID
	}
	if !d.Allow {
		d.Metadata["error"] = string(d.Code)
		return
	}
	set := func(name string) bool {
		return slices.ContainsFunc(d.SetHeaders, func(h Header) bool { return h.Name == name })
	}
	d.RemoveHeaders = slices.Grow(d.RemoveHeaders, len(IdentityHeaders))
	for _, name := range IdentityHeaders {
		if !set(name) {
			d.RemoveHeaders = append(d.RemoveHeaders, name)
		}
	}
	for name := range req.Headers {
		// x_authgate_account_id too: a WSGI upstream reads it as x-authgate-account-id, and Istio passes underscores.
		if strings.HasPrefix(strings.ReplaceAll(name, "_", "-"), IdentityHeaderPrefix) && !set(name) && !isIdentityHeader(name) {
			d.RemoveHeaders = append(d.RemoveHeaders, name)
		}
	}
}

// redisCtx bounds one Redis call inside the Check deadline.
func (p *Pipeline) redisCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.opts.RedisCallTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.opts.RedisCallTimeout)
}

// logFailure writes a dependency-failure line through the throttle: at most one line per kind per interval, with a count
// of the ones held back. The metrics count every event; the log only has to say that it is happening.
func (p *Pipeline) logFailure(ctx context.Context, level slog.Level, kind, msg string, args ...any) {
	p.deps.LogThrottle.Log(ctx, p.deps.Logger, level, kind, msg, args...)
}
