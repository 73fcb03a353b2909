// Command devstack runs authgate end to end in one process for local development (`make run`): extauthz and deviceflow
// on an in-memory store and an in-process Redis, a seeded demo tenant, account and app, a dev-only console sign-in, and
// the Envoy stand-in (internal/envoyshim) in front of a demo of Dify's API: the part of /openapi/v1 that Dify's CLI uses,
// answering from the identity headers extauthz adds. Nothing persists and nothing here is fit for production.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	opts := defaultOptions()
	flag.StringVar(&opts.ShimAddr, "shim-addr", opts.ShimAddr, "listen address of the Envoy stand-in (the API entry point)")
	flag.StringVar(&opts.DeviceflowAddr, "deviceflow-addr", opts.DeviceflowAddr, "listen address of deviceflow (the /device page)")
	flag.StringVar(&opts.ExtauthzAddr, "extauthz-addr", opts.ExtauthzAddr, "listen address of extauthz's gRPC server")
	flag.StringVar(&opts.AdminAddr, "admin-addr", opts.AdminAddr, "listen address of extauthz's /healthz, /readyz and /metrics")
	flag.StringVar(&opts.UpstreamAddr, "upstream-addr", opts.UpstreamAddr, "listen address of the demo upstream")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts.Lookup = os.LookupEnv
	if err := run(ctx, opts, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}
