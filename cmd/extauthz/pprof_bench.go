//go:build benchpprof

package main

import (
	"net/http"
	_ "net/http/pprof" // the profiling handlers, on http.DefaultServeMux
	"os"
)

// Built only by `go run ./cmd/benchextauthz -profile dir` (-tags benchpprof): serves net/http/pprof on EXTAUTHZ_PPROF_ADDR
// so the benchmark can take a CPU profile of a measured round. Never part of a release build.
func init() {
	if addr := os.Getenv("EXTAUTHZ_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
