// Command deviceflow serves the OAuth 2.0 device authorization grant for Dify's CLI (`serve`, the default), applies the
// database migrations (`migrate`), or runs one retention prune (`prune`).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, os.Args[1:], os.LookupEnv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "deviceflow: "+err.Error())
		os.Exit(1)
	}
}
