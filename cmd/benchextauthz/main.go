// Command benchextauthz measures extauthz against a null ext_authz server that allows everything, workload by workload,
// in both limiter modes (docs/benchmarks.md).
//
// It prepares a fresh Postgres database and leased, flushed Redis databases (one per mode), mints the tokens, starts a null
// server (this binary's "null" subcommand) and, for each workload, one extauthz per limiter mode, all as subprocesses, and
// drives them with the same pre-encoded, Envoy-shaped CheckRequests over a few gRPC connections, alternating the servers
// round by round. Every answer must be the correct one for its request (an allow, or the deny the workload expects): any
// other means the setup is wrong, and the run fails rather than report figures measured on error paths.
//
// Usage (from the module root): go run ./cmd/benchextauthz [-workloads mix,w1,w2,w3,w4] [-modes exact,batched]
// [-duration 4s] [-rounds 2] [-concurrency 32] [-conns 4] [-profile dir]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concurrency int
	rate        float64 // total Checks/s offered to every closed-loop workload; 0 = closed loop
	conns       int
	tokens      int
	workloads   []string
	modes       []string
	databaseURL string
	redisURL    string
	// checkTimeout overrides extauthz's CHECK_TIMEOUT when set; empty keeps the product default.
	checkTimeout string
	// profile is a directory for CPU profiles of extauthz, one per workload and mode ("" = none).
	profile string
	// env are extra extauthz settings (NAME=value), for experiments.
	env map[string]string
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
	var workloads, modes, env string
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "measured time of each round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each round")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds per server; the servers alternate null, exact, batched, null, ...")
	flag.IntVar(&o.concurrency, "concurrency", 32, "concurrent workers, each with one Check in flight")
	flag.Float64Var(&o.rate, "rate", 0,
		"offer this many Checks/s in total, paced, in the closed-loop workloads (0: closed loop, as fast as each server goes)")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections per server, shared round-robin by the workers")
	flag.IntVar(&o.tokens, "tokens", 1000, "tokens of each kind (dfoa_ and dfoe_) in today's mix")
	flag.StringVar(&workloads, "workloads", strings.Join(workloadNames, ","), "workloads to run, in order: "+
		strings.Join(workloadNames, ", "))
	flag.StringVar(&modes, "modes", "exact,batched", "limiter modes (RATE_LIMIT_MODE) to measure, one extauthz each")
	flag.StringVar(&o.databaseURL, "database-url", envOr("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"Postgres server on which a fresh database is created and dropped")
	flag.StringVar(&o.redisURL, "redis-url", envOr("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
		"Redis server whose database 0 holds the test leases; a free database 1..15 is leased and flushed per mode")
	flag.StringVar(&o.checkTimeout, "check-timeout", "",
		"extauthz CHECK_TIMEOUT (default: extauthz's own, 150ms); Checks past it are 503 denies, which invalidate the run")
	flag.StringVar(&o.profile, "profile", "",
		"write a CPU profile of each extauthz's first measured round here (<workload>-<mode>.pprof; builds with -tags benchpprof)")
	flag.StringVar(&env, "env", "", "extra extauthz settings, NAME=value,... (they win over the workload's)")
	flag.Parse()
	o.workloads, o.modes = splitList(workloads), splitList(modes)
	o.env = map[string]string{}
	for _, kv := range splitList(env) {
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "benchextauthz: -env: %q is not NAME=value\n", kv)
			os.Exit(2)
		}
		o.env[name] = value
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "benchextauthz:", err)
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

func (o options) validate() error {
	if o.rounds < 1 || o.concurrency < 1 || o.conns < 1 || o.tokens < 1 || o.duration <= 0 || o.rate < 0 {
		return errors.New("-rounds, -concurrency, -conns, -tokens and -duration must be positive, -rate not negative")
	}
	for _, w := range o.workloads {
		if !slices.Contains(workloadNames, w) {
			return fmt.Errorf("-workloads: unknown %q (want some of %s)", w, strings.Join(workloadNames, ", "))
		}
	}
	for _, m := range o.modes {
		if m != "exact" && m != "batched" {
			return fmt.Errorf("-modes: unknown %q (want exact, batched)", m)
		}
	}
	if len(o.workloads) == 0 || len(o.modes) == 0 {
		return errors.New("-workloads and -modes must name at least one")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// run prepares the world, starts the null server, runs each workload against it and one extauthz per mode, reports, and
// tears everything down whatever happened.
func run(ctx context.Context, o options) (err error) {
	fmt.Printf("machine: %d CPUs, load average before: %s\n", numCPU(), loadAverage())
	started := time.Now()

	db, err := createDatabase(ctx, o.databaseURL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.drop()) }()
	redisURLs := map[string]string{}
	for _, m := range o.modes {
		// Tests may be running on the same server: the benchmark takes its databases through their lease.
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		u, release, err := testenv.LeaseRedisDB(lctx, o.redisURL, strconv.Itoa(os.Getpid())+":benchextauthz")
		cancel()
		if err != nil {
			return fmt.Errorf("redis at %s: %w", redactURL(o.redisURL), err)
		}
		defer func() {
			_ = flushRedis(context.Background(), u) // a run leaves about a million limiter entries behind
			release()
		}()
		redisURLs[m] = u
	}

	cold := 0
	if slices.Contains(o.workloads, "w4") {
		cold = coldTokens
	}
	w, err := prepareWorld(ctx, db, o.tokens, cold)
	if err != nil {
		return err
	}
	fmt.Printf("fixture: %d tenants, %d accounts, %d apps; tokens: mix %d+%d, w1 %d+%d, cold %d (%s)\n",
		len(w.fixture.Tenants), len(w.fixture.Accounts), len(w.fixture.Apps), len(w.mix.accounts), len(w.mix.external),
		len(w.w1.accounts), len(w.w1.external), len(w.cold.accounts), time.Since(started).Round(time.Millisecond))

	dir, err := os.MkdirTemp("", "benchextauthz-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	bin, err := buildExtauthz(ctx, dir, o.profile != "")
	if err != nil {
		return err
	}
	null, err := startNull(ctx, dir)
	if err != nil {
		return err
	}
	defer null.stop()
	nullConns, err := dial(null.addr, o.conns)
	if err != nil {
		return err
	}
	defer closeConns(nullConns)

	r := &runner{opts: o, world: w, bin: bin, dir: dir, dbURL: db.url, redisURLs: redisURLs,
		null: target{name: "null", proc: null, conns: nullConns, null: true}, bench: &bench{opts: o, redisURL: o.redisURL, postmaster: db.postmaster}}
	for _, name := range o.workloads {
		if err := r.runWorkload(ctx, workloadByName(name)); err != nil {
			return err
		}
	}
	printAims(os.Stdout, r.rows)
	fmt.Printf("load average after: %s; whole run %s\n", loadAverage(), time.Since(started).Round(time.Second))
	fmt.Println("sanity: every measured Check got a correct answer; no gRPC errors")
	return nil
}
