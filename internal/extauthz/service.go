package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/authgate/authgate/internal/clientip"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// streamWorkersPerCPU sizes gRPC's pool of long-lived goroutines that run Checks. A goroutine per Check starts with a
// small stack and grew it on every Check (stack copying was ~12% of extauthz's CPU under load); a worker keeps its stack
// between Checks. A Check mostly waits on the limiter's round trip, so the pool is sized for the Checks in flight, not
// for the CPUs alone; beyond it gRPC falls back to a goroutine per Check.
const streamWorkersPerCPU = 32

// localCacheEntries bounds the in-process token cache.
const localCacheEntries = 100_000

// KeepaliveMinTime is the shortest interval between a client's HTTP/2 pings that extauthz accepts, with or without a Check in
// flight. Envoy pings every connection to the extauthz cluster every 30 s (envoy/envoy.yaml, connection_keepalive), idle
// or not; grpc-go's default policy (a ping at most every 5 minutes, none without an active stream) answers the third such
// ping with GOAWAY too_many_pings and closes the connection, and a Check sent on it meanwhile fails with 503. A third of
// Envoy's interval leaves room for its jitter and for clients that ping more often.
const KeepaliveMinTime = 10 * time.Second

// keepaliveEnforcement is the ping policy Start gives the gRPC server.
var keepaliveEnforcement = keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}

// Deps are the stores the service runs on; cmd/extauthz opens Postgres and Redis, devstack passes in-memory ones.
type Deps struct {
	Tokens    tokens.Store
	Directory directory.Directory
	Redis     redis.UniversalClient
	// RedisHealthy reports Redis's health breaker (redisclient.Client.Breaker): while it says false, Checks skip Redis
	// altogether. nil: Redis is always tried.
	RedisHealthy func() bool
	// Enterprise is the EE client; nil on CE.
	Enterprise *enterprise.Client
	Telemetry  *telemetry.Telemetry
}

// Service is a running extauthz: the gRPC server, the admin server and the token cache's revocation follower.
type Service struct {
	logger          *slog.Logger
	grpcLn, adminLn net.Listener
	grpc            *grpc.Server
	health          *health.Server
	admin           *http.Server
	ready           atomic.Bool
	drainDelay      time.Duration // SHUTDOWN_DRAIN_DELAY

	stopBackground context.CancelFunc
	background     sync.WaitGroup
	lastUsed       *lastused.Recorder
	limiter        *ratelimit.SlidingWindow
	pipeline       *pipeline.Pipeline
}

// Start builds the pipeline over deps and serves ext_authz on grpcLn and /healthz, /readyz, /metrics on adminLn. It owns
// the listeners from then on (Shutdown closes them); the stores in deps stay the caller's.
func Start(ctx context.Context, cfg config.Extauthz, deps Deps, grpcLn, adminLn net.Listener) (*Service, error) {
	policy, err := pipeline.LoadPolicy(cfg.RoutesFile)
	if err != nil {
		return nil, &config.Error{Var: "ROUTES_FILE", Reason: err.Error()}
	}
	tel := deps.Telemetry
	cache := tokencache.New(deps.Redis, tokencache.Options{TTL: cfg.TokenCacheTTL, Local: true, LocalMaxEntries: localCacheEntries})
	// Each limiter call is bounded like the pipeline's other Redis calls (half the Check deadline), by the limiter itself.
	limiter, err := ratelimit.New(deps.Redis, ratelimit.Options{Mode: ratelimit.Mode(cfg.RateLimitMode),
		BatchInterval: cfg.RateLimitBatchInterval, Allowance: cfg.RateLimitBatchAllowance, CallTimeout: cfg.CheckTimeout / 2,
		Meter: tel.Meter, MetricPrefix: "authgate_extauthz"})
	if err != nil {
		return nil, &config.Error{Var: "RATE_LIMIT_MODE", Reason: err.Error()}
	}
	pdeps := pipeline.Deps{
		Limiter:      limiterAdapter{limiter},
		Cache:        cacheAdapter{cache},
		Tokens:       deps.Tokens,
		Directory:    deps.Directory,
		ClientBucket: clientip.Bucket,
		RedisHealthy: deps.RedisHealthy,
		Logger:       tel.Logger,
		Meter:        tel.Meter,
	}
	if deps.Enterprise != nil { // a nil *Client in the interface would not read as "no enterprise service"
		pdeps.Enterprise = deps.Enterprise
	}
	pl, err := pipeline.New(policy, pipeline.Options{
		EnableOAuthBearer:          cfg.EnableOAuthBearer,
		RateLimitPerToken:          cfg.RateLimitPerToken,
		RateLimitFailOpen:          cfg.RateLimitFailOpen,
		InvalidBearerPerIPPerMin:   cfg.InvalidBearerPerIPPerMin,
		MembershipEnforcedUpstream: cfg.MembershipEnforcedUpstream,
		CheckTimeout:               cfg.CheckTimeout,
		ForwardAuthorization:       cfg.ForwardAuthorization,
		EnterpriseEnabled:          cfg.EnterpriseEnabled,
	}, pdeps)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}

	s := &Service{logger: tel.Logger, grpcLn: grpcLn, adminLn: adminLn, drainDelay: cfg.ShutdownDrainDelay, limiter: limiter,
		pipeline: pl}
	s.grpc = NewGRPCServer(serverOptions(cfg, keepaliveEnforcement)...)
	checks := NewServer(pl, tel.Logger, cfg.TrustedProxyHops)
	checks.tracer = tel.Tracer
	if checks.assertion, err = newAssertionSigner(cfg.IdentityAssertion); err != nil {
		return nil, err
	}
	if s.lastUsed, err = lastused.New(deps.Tokens, lastused.Options{Interval: cfg.TokenLastUsedInterval, Logger: tel.Logger,
		Meter: tel.Meter, MetricPrefix: "authgate_extauthz"}); err != nil {
		return nil, err
	}
	checks.lastUsed = s.lastUsed
	checks.Register(s.grpc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	s.admin = &http.Server{
		Handler:           withJWKS(telemetry.AdminHandler(s.ready.Load, tel.MetricsHandler()), checks.assertion),
		ReadHeaderTimeout: 5 * time.Second,
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopBackground = cancel
	s.background.Go(func() {
		if err := cache.Run(bg); err != nil && !errors.Is(err, context.Canceled) {
			s.logger.Error("token cache revocation follower stopped", "error", err)
		}
	})
	// Revocations whose publish failed reach this replica's caches from Postgres's records.
	reconciler := tokencache.NewReconciler(cache, deps.Tokens, tokencache.ReconcilerOptions{Logger: tel.Logger})
	s.background.Go(func() { _ = reconciler.Run(bg) })
	s.background.Go(func() {
		if err := s.grpc.Serve(grpcLn); err != nil {
			s.logger.Error("grpc server stopped", "error", err)
		}
	})
	s.background.Go(func() {
		if err := s.admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("admin server stopped", "error", err)
		}
	})
	s.ready.Store(true)
	s.logger.Info("extauthz serving", "grpc", s.GRPCAddr(), "admin", s.AdminAddr(), "routes", len(policy.Routes),
		"enterprise", cfg.EnterpriseEnabled)
	return s, nil
}

// serverOptions are the gRPC server's connection settings: the client pings it accepts (pings), connection ageing, and the
// pool of Check workers.
func serverOptions(cfg config.Extauthz, pings keepalive.EnforcementPolicy) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(pings),
		// Envoy holds one HTTP/2 connection per upstream host for ever; ageing it out spreads load over new replicas.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      cfg.MaxConnectionAge,
			MaxConnectionAgeGrace: cfg.ShutdownTimeout,
		}),
		grpc.NumStreamWorkers(uint32(streamWorkersPerCPU * runtime.GOMAXPROCS(0))),
	}
}

// GRPCAddr is the bound ext_authz address (useful with :0).
func (s *Service) GRPCAddr() string { return s.grpcLn.Addr().String() }

// AdminAddr is the bound admin address.
func (s *Service) AdminAddr() string { return s.adminLn.Addr().String() }

// Shutdown takes the replica out of rotation and keeps answering Checks for the drain delay (SHUTDOWN_DRAIN_DELAY), then
// stops taking new work, lets in-flight Checks finish (up to ctx), and stops the background work. ctx must leave room for
// the drain delay; when it ends during the drain, the server stops at once.
//
// The replica reports NOT_SERVING (gRPC health and /readyz) first and refuses Checks only later because Envoy keeps
// sending Checks to it until unhealthy_threshold health checks have failed (about 10 s with envoy/envoy.yaml's): a Check
// refused meanwhile becomes a 503 once Envoy's one retry is spent.
func (s *Service) Shutdown(ctx context.Context) error {
	wasReady := s.ready.Swap(false)
	s.health.Shutdown()
	if wasReady && s.drainDelay > 0 { // drained once: a second Shutdown goes straight to stopping
		s.logger.Info("not serving; answering Checks until the proxies have dropped this replica", "drain_delay", s.drainDelay)
		drain := time.NewTimer(s.drainDelay)
		select {
		case <-drain.C:
		case <-ctx.Done():
			drain.Stop()
		}
	}
	drained := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(drained)
	}()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		s.grpc.Stop()
		<-drained
		err = fmt.Errorf("shutdown: in-flight checks cut off: %w", ctx.Err())
	}
	if aerr := s.admin.Shutdown(ctx); aerr != nil && err == nil {
		err = aerr
	}
	s.pipeline.WaitFills(ctx)                      // the cache fills of the last Checks, sent as they answered, before the stores close
	if lerr := s.limiter.Close(ctx); lerr != nil { // the Checks have drained: write the hits a batched limiter holds
		s.logger.Warn("rate-limit hits not written at shutdown", "error", lerr)
	}
	if lerr := s.lastUsed.Close(ctx); lerr != nil { // the Checks have drained: write their last uses
		s.logger.Warn("last-used times not written at shutdown", "error", lerr)
	}
	s.stopBackground()
	s.background.Wait()
	return err
}
