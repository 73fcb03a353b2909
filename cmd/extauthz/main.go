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
