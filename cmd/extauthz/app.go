package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/authgate/authgate/internal/clientip"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/extauthz"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokencache"
)

// localCacheEntries bounds the in-process token cache.
const localCacheEntries = 100_000

// App is a running extauthz: the gRPC server, the admin server and the background cache follower. Tests start it on :0.
type App struct {
	cfg    config.Extauthz
	logger *slog.Logger

	grpcLn, adminLn net.Listener
	grpc            *grpc.Server
	health          *health.Server
	admin           *http.Server
	pool            *pgxpool.Pool
	rdb             *redis.Client
	ready           atomic.Bool

	stopBackground context.CancelFunc
	background     sync.WaitGroup
}

// Start builds every dependency from cfg and starts serving. Shared dependencies are not required to be up: Postgres and
// Redis connect lazily, so an outage turns into 503s (or the fail-open limiter), not a crash loop.
func Start(ctx context.Context, cfg config.Extauthz, tel *telemetry.Telemetry) (*App, error) {
	policy, err := pipeline.LoadPolicy(cfg.RoutesFile)
	if err != nil {
		return nil, &config.Error{Var: "ROUTES_FILE", Reason: err.Error()}
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, &config.Error{Var: "DATABASE_URL", Reason: "not a Postgres URL"}
	}
	redisOpts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, &config.Error{Var: "REDIS_URL", Reason: "not a redis:// or rediss:// URL"}
	}
	// Every Redis call runs inside the Check deadline; a retry or a long dial would only burn it.
	redisOpts.ContextTimeoutEnabled = true
	redisOpts.MaxRetries = -1
	redisOpts.DialerRetries = 1
	redisOpts.DialTimeout = max(cfg.CheckTimeout, 100*time.Millisecond)

	a := &App{cfg: cfg, logger: tel.Logger}
	a.pool, err = pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	a.rdb = redis.NewClient(redisOpts)

	cache := tokencache.New(a.rdb, tokencache.Options{TTL: cfg.TokenCacheTTL, Local: true, LocalMaxEntries: localCacheEntries})
	deps := pipeline.Deps{
		Limiter:      limiterAdapter{ratelimit.NewSlidingWindow(a.rdb)},
		Cache:        cacheAdapter{cache},
		Tokens:       postgres.NewTokenStore(a.pool),
		Directory:    postgres.NewDirectory(a.pool),
		ClientBucket: clientip.Bucket,
		Logger:       tel.Logger,
		Meter:        tel.Meter,
	}
	if cfg.EnterpriseEnabled {
		deps.Enterprise = enterprise.New(cfg.EnterpriseAPIURL, cfg.EnterpriseSecretKey, enterprise.Options{
			HTTPTimeout: cfg.CheckTimeout,
			OnBreakerChange: func(from, to string) {
				tel.Logger.Warn("enterprise service breaker changed", "from", from, "to", to)
			},
		})
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
	}, deps)
	if err != nil {
		a.closeStores()
		return nil, fmt.Errorf("pipeline: %w", err)
	}

	if a.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		a.closeStores()
		return nil, &config.Error{Var: "EXTAUTHZ_GRPC_ADDR", Reason: err.Error()}
	}
	if a.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		a.grpcLn.Close()
		a.closeStores()
		return nil, &config.Error{Var: "ADMIN_ADDR", Reason: err.Error()}
	}

	// Envoy holds one HTTP/2 connection per upstream host for ever; ageing it out spreads load over new replicas.
	a.grpc = grpc.NewServer(grpc.KeepaliveParams(keepalive.ServerParameters{
		MaxConnectionAge:      cfg.MaxConnectionAge,
		MaxConnectionAgeGrace: cfg.ShutdownTimeout,
	}))
	authv3.RegisterAuthorizationServer(a.grpc, extauthz.NewServer(pl, tel.Logger, cfg.TrustedProxyHops))
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	a.admin = &http.Server{
		Handler:           telemetry.AdminHandler(a.ready.Load, tel.MetricsHandler()),
		ReadHeaderTimeout: 5 * time.Second,
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopBackground = cancel
	a.background.Add(3)
	go func() {
		defer a.background.Done()
		if err := cache.Run(bg); err != nil && !errors.Is(err, context.Canceled) {
			a.logger.Error("token cache revocation follower stopped", "error", err)
		}
	}()
	go func() {
		defer a.background.Done()
		if err := a.grpc.Serve(a.grpcLn); err != nil {
			a.logger.Error("grpc server stopped", "error", err)
		}
	}()
	go func() {
		defer a.background.Done()
		if err := a.admin.Serve(a.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("admin server stopped", "error", err)
		}
	}()
	a.ready.Store(true)
	a.logger.Info("extauthz serving", "grpc", a.GRPCAddr(), "admin", a.AdminAddr(), "routes", len(policy.Routes),
		"enterprise", cfg.EnterpriseEnabled)
	return a, nil
}

// GRPCAddr is the bound ext_authz address (useful with :0).
func (a *App) GRPCAddr() string { return a.grpcLn.Addr().String() }

// AdminAddr is the bound admin address.
func (a *App) AdminAddr() string { return a.adminLn.Addr().String() }

// Shutdown stops taking new work, lets in-flight Checks finish (up to ctx), then closes everything.
func (a *App) Shutdown(ctx context.Context) error {
	a.ready.Store(false)
	a.health.Shutdown()
	drained := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(drained)
	}()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		a.grpc.Stop()
		<-drained
		err = fmt.Errorf("shutdown: in-flight checks cut off: %w", ctx.Err())
	}
	if aerr := a.admin.Shutdown(ctx); aerr != nil && err == nil {
		err = aerr
	}
	a.stopBackground()
	a.background.Wait()
	a.closeStores()
	return err
}

func (a *App) closeStores() {
	a.pool.Close()
	_ = a.rdb.Close()
}
