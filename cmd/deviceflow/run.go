package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/deviceflow"
	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokencache"
)

// Listening is told the bound addresses once both servers accept connections (tests listen on :0).
type Listening func(api, admin net.Addr)

// Run runs one subcommand: serve (the default), migrate or prune. serve returns when ctx ends, after a graceful shutdown.
func Run(ctx context.Context, args []string, lookup config.Lookup, stderr io.Writer, listening Listening) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	if len(args) > 1 {
		return fmt.Errorf("unexpected arguments after %q: %v", cmd, args[1:])
	}
	switch cmd {
	case "serve":
		return serve(ctx, lookup, stderr, listening)
	case "migrate":
		return migrate(ctx, lookup, stderr)
	case "prune":
		return prune(ctx, lookup, stderr)
	}
	return fmt.Errorf("unknown command %q (want serve, migrate or prune)", cmd)
}

func openPool(ctx context.Context, db config.Database) (*pgxpool.Pool, error) {
	pool, err := postgres.OpenPool(ctx, db.DSN())
	if err != nil {
		return nil, &config.Error{Var: db.Var(), Reason: err.Error()}
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: cannot reach Postgres: %w", db.Var(), err)
	}
	return pool, nil
}

func migrate(ctx context.Context, lookup config.Lookup, stderr io.Writer) error {
	return maintain(ctx, lookup, stderr, func(cfg config.Maintenance, log *slog.Logger, pool *pgxpool.Pool) error {
		if err := postgres.Migrate(ctx, pool); err != nil {
			return err
		}
		log.InfoContext(ctx, "migrations applied")
		return nil
	})
}

func prune(ctx context.Context, lookup config.Lookup, stderr io.Writer) error {
	return maintain(ctx, lookup, stderr, func(cfg config.Maintenance, log *slog.Logger, pool *pgxpool.Pool) error {
		_, err := deviceflow.NewPruner(postgres.NewTokenStore(pool), cfg.RetentionDays, log, nil).RunOnce(ctx)
		return err
	})
}

// maintain runs one maintenance subcommand: it needs only Postgres, so Redis and SECRET_KEY are neither read nor required.
func maintain(ctx context.Context, lookup config.Lookup, stderr io.Writer,
	task func(config.Maintenance, *slog.Logger, *pgxpool.Pool) error) error {
	cfg, err := config.LoadMaintenance(lookup)
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		log.WarnContext(ctx, "configuration adjusted", "detail", w)
	}
	pool, err := openPool(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	return task(cfg, log, pool)
}

func serve(ctx context.Context, lookup config.Lookup, stderr io.Writer, listening Listening) error {
	cfg, warnings, err := config.LoadDeviceflow(lookup)
	if err != nil {
		return err
	}
	tel, err := telemetry.Setup(ctx, "deviceflow", telemetry.Config{OTLPEndpoint: cfg.OTLPEndpoint, LogLevel: cfg.LogLevel, LogOutput: stderr})
	if err != nil {
		return err
	}
	log := tel.Logger
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(shutdownCtx)
	}()
	for _, w := range warnings {
		log.WarnContext(ctx, "configuration adjusted", "detail", w)
	}

	// Parsed before anything connects, so a bad REDIS_URL stops start-up at once. The reason is fixed: go-redis passes on
	// net/url's error, which quotes the whole URL, AUTH password included.
	redisclient.SetLogger(log)
	rdb, err := redisclient.Open(redisclient.Options{Redis: cfg.Redis, Breaker: redisclient.BreakerOptions{
		OnChange: func(open bool) {
			if open {
				log.Warn("redis unreachable; failing its calls fast until a probe answers")
			} else {
				log.Info("redis reachable again")
			}
		},
	}})
	if err != nil {
		return &config.Error{Var: "REDIS_URL", Reason: err.Error()}
	}
	defer rdb.Close()
	pool, err := openPool(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()

	deps := deviceflow.Deps{
		Tokens:    postgres.NewTokenStore(pool),
		Directory: postgres.NewDirectory(pool),
		Redis:     rdb,
		Limiter:   ratelimit.NewSlidingWindow(rdb),
		Revoker:   tokencache.NewRevoker(rdb, cfg.TokenCacheTTL),
	}
	if cfg.EnterpriseEnabled {
		deps.Enterprise = enterprise.New(cfg.EnterpriseAPIURL, cfg.EnterpriseSecretKey, enterprise.Options{})
	}

	apiLn, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("DEVICEFLOW_ADDR: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("ADMIN_ADDR: %w", err)
	}
	svc, err := deviceflow.Start(ctx, cfg, deps, tel, apiLn, adminLn, deviceflow.StartOptions{})
	if err != nil {
		apiLn.Close()
		adminLn.Close()
		return err
	}
	if listening != nil {
		listening(apiLn.Addr(), adminLn.Addr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-svc.Failed():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(serveErr, svc.Shutdown(shutdownCtx))
}
