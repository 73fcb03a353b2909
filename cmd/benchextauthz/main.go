// Command benchextauthz measures extauthz against a null ext_authz server that allows everything (issue 3, "Benchmark").
//
// It prepares a fresh Postgres database and a leased, flushed Redis database, mints many tokens, starts the real extauthz
// binary and a null server (this binary's "null" subcommand) as subprocesses, and drives both with the same pre-encoded,
// Envoy-shaped CheckRequests over a few gRPC connections, alternating the two round by round. Every extauthz response must
// be an allow: a deny means the setup is wrong, and the run fails rather than report figures measured on error paths.
//
// Usage (from the module root): go run ./cmd/benchextauthz [-duration 8s] [-rounds 3] [-concurrency 32] [-conns 4]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concurrency int
	rate        float64 // total Checks/s offered; 0 = closed loop
	conns       int
	tokens      int
	databaseURL string
	redisURL    string
	// checkTimeout overrides extauthz's CHECK_TIMEOUT when set; empty keeps the product default.
	checkTimeout string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == nullCommand {
		if err := runNullServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "benchextauthz null:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "measured time of each round")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each round")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per server; the servers alternate null, extauthz, null, ...")
	flag.IntVar(&o.concurrency, "concurrency", 32, "concurrent workers, each with one Check in flight")
	flag.Float64Var(&o.rate, "rate", 0,
		"offer this many Checks/s in total, paced, to compare latencies at equal load (0: closed loop, as fast as each server goes)")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections per server, shared round-robin by the workers")
	flag.IntVar(&o.tokens, "tokens", 1000, "tokens minted of each kind (dfoa_ and dfoe_)")
	flag.StringVar(&o.databaseURL, "database-url", envOr("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"Postgres server on which a fresh database is created and dropped")
	flag.StringVar(&o.redisURL, "redis-url", envOr("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
		"Redis server whose database 0 holds the test leases; a free database 1..15 is leased and flushed")
	flag.StringVar(&o.checkTimeout, "check-timeout", "",
		"extauthz CHECK_TIMEOUT (default: extauthz's own, 150ms); Checks past it are 503 denies, which invalidate the run")
	flag.Parse()
	if o.rounds < 1 || o.concurrency < 1 || o.conns < 1 || o.tokens < 1 || o.duration <= 0 || o.rate < 0 {
		fmt.Fprintln(os.Stderr, "benchextauthz: -rounds, -concurrency, -conns, -tokens and -duration must be positive, -rate not negative")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, o)
	var insane *insaneError
	switch {
	case errors.As(err, &insane):
		fmt.Fprintln(os.Stderr, "benchextauthz: INVALID RUN:", err)
		os.Exit(3)
	case err != nil:
		fmt.Fprintln(os.Stderr, "benchextauthz:", err)
		os.Exit(1)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// run prepares the world, starts both servers, measures, reports, and tears everything down whatever happened.
func run(ctx context.Context, o options) (err error) {
	fmt.Printf("machine: %d CPUs, load average before: %s\n", numCPU(), loadAverage())
	started := time.Now()

	db, err := createDatabase(ctx, o.databaseURL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.drop()) }()
	redisURL, release, err := leaseRedis(ctx, o.redisURL)
	if err != nil {
		return err
	}
	defer release()

	w, err := prepareWorld(ctx, db, o.tokens)
	if err != nil {
		return err
	}
	fmt.Printf("fixture: %d tenants, %d accounts, %d apps, %d dfoa_ + %d dfoe_ tokens (%s)\n",
		len(w.fixture.Tenants), len(w.fixture.Accounts), len(w.fixture.Apps), o.tokens, o.tokens, time.Since(started).Round(time.Millisecond))

	dir, err := os.MkdirTemp("", "benchextauthz-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	servers, err := startServers(ctx, dir, db.url, redisURL, o.checkTimeout)
	if err != nil {
		return err
	}
	defer servers.stop()
	defer func() {
		var insane *insaneError
		if errors.As(err, &insane) {
			if lines := servers.ext.errorLines(10); len(lines) > 0 {
				fmt.Printf("extauthz's last error log lines:\n%s\n", strings.Join(lines, "\n"))
			}
		}
	}()

	reqs, err := buildRequests(w)
	if err != nil {
		return err
	}
	b := &bench{opts: o, reqs: reqs, servers: servers, redisURL: redisURL}
	defer b.close()
	if err := b.prepare(ctx); err != nil {
		return err
	}
	cacheBefore, err := cacheCounts(ctx, servers.ext.adminAddr)
	if err != nil {
		return fmt.Errorf("extauthz /metrics: %w", err)
	}
	res, err := b.measure(ctx)
	if err != nil {
		return err
	}
	cacheAfter, err := cacheCounts(ctx, servers.ext.adminAddr)
	if err != nil {
		return fmt.Errorf("extauthz /metrics: %w", err)
	}
	res.cache = cacheDelta(cacheBefore, cacheAfter)
	res.print(os.Stdout, o, len(reqs))
	fmt.Printf("load average after: %s; whole run %s\n", loadAverage(), time.Since(started).Round(time.Second))
	return res.sanity()
}
