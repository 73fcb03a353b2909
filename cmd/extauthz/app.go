package main

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/extauthz"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
)

// App is a running extauthz over Postgres and Redis. Tests start it on :0.
type App struct {
	*extauthz.Service
	pool *pgxpool.Pool
	rdb  *redisclient.Client
}

// Start opens Postgres and Redis from cfg and starts serving. Shared dependencies are not required to be up: Postgres and
// Redis connect lazily, so an outage turns into 503s (or the fail-open limiter), not a crash loop.
func Start(ctx context.Context, cfg config.Extauthz, tel *telemetry.Telemetry) (*App, error) {
	a := &App{}
	var err error
	if a.pool, err = postgres.OpenPool(ctx, cfg.Database.DSN()); err != nil {
		return nil, &config.Error{Var: cfg.Database.Var(), Reason: err.Error()}
	}
	// Every Redis call runs inside the Check deadline; a long dial would only burn it.
	a.rdb, err = redisclient.Open(redisclient.Options{
		Redis:       cfg.Redis,
		CallTimeout: max(cfg.CheckTimeout, 100*time.Millisecond),
		DialTimeout: max(cfg.CheckTimeout, 100*time.Millisecond),
		Breaker:     redisclient.BreakerOptions{OnChange: breakerLogger(tel)},
	})
	if err != nil {
		a.pool.Close()
		return nil, &config.Error{Var: "REDIS_URL", Reason: err.Error()}
	}
	breaker := a.rdb.Breaker
	deps := extauthz.Deps{
		Tokens:       postgres.NewTokenStore(a.pool),
		Directory:    postgres.NewDirectory(a.pool),
		Redis:        a.rdb,
		RedisHealthy: func() bool { return !breaker.Open() },
		Telemetry:    tel,
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

// breakerLogger reports the Redis health breaker's transitions: one line when Redis is declared down, one when it is back.
func breakerLogger(tel *telemetry.Telemetry) func(open bool) {
	return func(open bool) {
		if open {
			tel.Logger.Warn("redis unreachable; failing its calls fast until a probe answers")
		} else {
			tel.Logger.Info("redis reachable again")
		}
	}
}
