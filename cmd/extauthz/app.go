package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/extauthz"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
)

// App is a running extauthz over Postgres and Redis. Tests start it on :0.
type App struct {
	*extauthz.Service
	pool *pgxpool.Pool
	rdb  *redis.Client
}

// Start opens Postgres and Redis from cfg and starts serving. Shared dependencies are not required to be up: Postgres and
// Redis connect lazily, so an outage turns into 503s (or the fail-open limiter), not a crash loop.
func Start(ctx context.Context, cfg config.Extauthz, tel *telemetry.Telemetry) (*App, error) {
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
	// RESP2 unless the URL asks for another (?protocol=3): extauthz uses nothing RESP3 adds, and on RESP3 go-redis looks
	// for push notifications before reading every reply, ~1.5% of extauthz's CPU under load.
	if redisOpts.Protocol == 0 {
		redisOpts.Protocol = 2
	}

	a := &App{}
	if a.pool, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	a.rdb = redis.NewClient(redisOpts)
	deps := extauthz.Deps{
		Tokens:    postgres.NewTokenStore(a.pool),
		Directory: postgres.NewDirectory(a.pool),
		Redis:     a.rdb,
		Telemetry: tel,
	}
	if cfg.EnterpriseEnabled {
		deps.Enterprise = enterprise.New(cfg.EnterpriseAPIURL, cfg.EnterpriseSecretKey, enterprise.Options{
			HTTPTimeout: cfg.CheckTimeout,
			OnBreakerChange: func(from, to string) {
				tel.Logger.Warn("enterprise service breaker changed", "from", from, "to", to)
			},
		})
	}

	grpcLn, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		a.closeStores()
		return nil, &config.Error{Var: "EXTAUTHZ_GRPC_ADDR", Reason: err.Error()}
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		grpcLn.Close()
		a.closeStores()
		return nil, &config.Error{Var: "ADMIN_ADDR", Reason: err.Error()}
	}
	if a.Service, err = extauthz.Start(ctx, cfg, deps, grpcLn, adminLn); err != nil {
		grpcLn.Close()
		adminLn.Close()
		a.closeStores()
		return nil, err
	}
	return a, nil
}

// Shutdown drains in-flight Checks (up to ctx), then closes Postgres and Redis.
func (a *App) Shutdown(ctx context.Context) error {
	err := a.Service.Shutdown(ctx)
	a.closeStores()
	return err
}

func (a *App) closeStores() {
	a.pool.Close()
	_ = a.rdb.Close()
}
