// Command extauthz is authgate's Envoy external-authorization server (docs/architecture.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/redisclient"
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
	redisclient.SetLogger(tel.Logger)
	for _, w := range warnings {
		tel.Logger.Warn("configuration clamped", "detail", w)
	}
	if percent, limit := tuneGC(os.LookupEnv, os.ReadFile); percent > 0 || limit > 0 {
		tel.Logger.Info("garbage collector tuned", "gogc", percent, "gomemlimit_bytes", limit)
	}
	app, err := Start(ctx, cfg, tel)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop() // a second signal ends the process at once instead of waiting for the drain
	tel.Logger.Info("shutting down", "drain_delay", cfg.ShutdownDrainDelay, "timeout", cfg.ShutdownTimeout)
	// The drain delay first (Checks still answered while the proxies drop this replica), then SHUTDOWN_TIMEOUT for the
	// Checks in flight when the server stops accepting.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownDrainDelay+cfg.ShutdownTimeout)
	defer cancel()
	err = app.Shutdown(shutdownCtx)
	if terr := tel.Shutdown(shutdownCtx); err == nil {
		err = terr
	}
	return err
}
