// Command extauthz is authgate's Envoy external-authorization server (SPEC §3).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "extauthz:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, warnings, err := config.LoadExtauthz(os.LookupEnv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tel, err := telemetry.Setup(ctx, "extauthz", telemetry.Config{OTLPEndpoint: cfg.OTLPEndpoint, LogLevel: cfg.LogLevel})
	if err != nil {
		return err
	}
	// go-redis logs every failed dial to stderr; during an outage that is a line per Check. The outage is already visible
	// in the metrics and the fail-open warnings, so its own chatter goes to debug.
	redis.SetLogger(redisLogger{tel.Logger})
	for _, w := range warnings {
		tel.Logger.Warn("configuration clamped", "detail", w)
	}
	app, err := Start(ctx, cfg, tel)
	if err != nil {
		return err
	}
	<-ctx.Done()
	tel.Logger.Info("shutting down; draining in-flight checks", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	err = app.Shutdown(shutdownCtx)
	if terr := tel.Shutdown(shutdownCtx); err == nil {
		err = terr
	}
	return err
}

type redisLogger struct{ logger *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.logger.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
