package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A workload is one kind of traffic, measured against the null server and one extauthz per limiter mode in the same run.
type workload struct {
	name, title string
	// limit is extauthz's OPENAPI_RATE_LIMIT_PER_TOKEN for it.
	limit string
	// requests builds what is sent; warmup is the part sent once before measuring (nil: nothing, a cold workload).
	requests func(*world) (all, warmup []request, err error)
	// pace is the offered rate (0: closed loop, or -rate); halfNull adds a second, paced phase at half of the null
	// server's closed-loop throughput, to compare latencies below saturation.
	pace     float64
	halfNull bool
	// cold: no request may reach a server twice (each round gets its own requests, and nothing is warmed).
	cold bool
}

var workloadNames = []string{"mix", "w1", "w2", "w3", "w4"}

// w2Tokens is how many tokens W2 sends far over their limit.
const (
	w2Tokens    = 50
	w3Addresses = 256
	// invalidBearerBudget is extauthz's default INVALID_BEARER_PER_IP_PER_MINUTE.
	invalidBearerBudget = 60
	w4Rate              = 1000
	defaultLimitStr     = "60"
)

func workloadByName(name string) workload {
	switch name {
	case "w1":
		return workload{name: "w1", title: "W1: 20,000 tokens at the default limit of 60/min, each under it", limit: defaultLimitStr,
			requests: func(w *world) ([]request, []request, error) {
				reqs, err := oneEachRequests(w.w1)
				return reqs, reqs, err
			}}
	case "w2":
		return workload{name: "w2", title: fmt.Sprintf("W2: %d tokens far over their limit of 60/min", w2Tokens),
			limit: defaultLimitStr,
			requests: func(w *world) ([]request, []request, error) {
				reqs, err := mixRequests(tokenSet{accounts: w.mix.accounts[:min(w2Tokens, len(w.mix.accounts))]}, expectAllowOr429)
				return reqs, reqs, err
			}}
	case "w3":
		return workload{name: "w3", title: fmt.Sprintf("W3: today's mix and as many random bearers from %d addresses",
			w3Addresses), limit: benchRateLimit,
			requests: func(w *world) ([]request, []request, error) {
				valid, err := mixRequests(w.mix, expectAllow)
				if err != nil {
					return nil, nil, err
				}
				invalid, err := randomBearerRequests(len(valid), w3Addresses)
				if err != nil {
					return nil, nil, err
				}
				all := make([]request, 0, 2*len(valid))
				for i := range valid {
					all = append(all, valid[i], invalid[i])
				}
				// Warming spends every address's invalid-bearer budget (60 a minute), so the rounds measure the steady
				// state: an address over its budget costs Postgres a lookup only through the suspect lane (20/s per process).
				spend, err := randomBearerRequests(w3Addresses*(invalidBearerBudget+10), w3Addresses)
				if err != nil {
					return nil, nil, err
				}
				return all, slices.Concat(valid, spend), nil
			}}
	case "w4":
		return workload{name: "w4", title: "W4: cold caches, every token read from Postgres", limit: defaultLimitStr,
			pace: w4Rate, cold: true,
			requests: func(w *world) ([]request, []request, error) {
				reqs, err := oneEachRequests(w.cold)
				return reqs, nil, err
			}}
	}
	return workload{name: "mix", title: "today's mix, a limit that never trips", limit: benchRateLimit, halfNull: true,
		requests: func(w *world) ([]request, []request, error) {
			reqs, err := mixRequests(w.mix, expectAllow)
			return reqs, reqs, err
		}}
}

// runner holds what every workload shares.
type runner struct {
	opts      options
	world     *world
	bin, dir  string
	dbURL     string
	redisURLs map[string]string // per mode
	null      target
	bench     *bench
	rows      []row
}

func (r *runner) runWorkload(ctx context.Context, wl workload) (err error) {
	reqs, warmReqs, err := wl.requests(r.world)
	if err != nil {
		return err
	}
	if wl.name == "w4" {
		// Each round's share must outlast its warm-up and measurement, with room for a worker that runs ahead.
		need := r.opts.rounds * (int((r.opts.warmup+r.opts.duration).Seconds()*wl.pace) + 500)
		if len(reqs) < need {
			return fmt.Errorf("w4: %d cold tokens for %d Checks; lower -rounds or -duration", len(reqs), need)
		}
	}
	fmt.Printf("\n== %s (%d distinct requests)\n", wl.title, len(reqs))
	var exts []target
	defer func() {
		for _, t := range exts {
			closeConns(t.conns)
			t.proc.stop()
		}
	}()
	for _, mode := range r.opts.modes {
		if err := flushRedis(ctx, r.redisURLs[mode]); err != nil {
			return err
		}
		env := map[string]string{"RATE_LIMIT_MODE": mode, "OPENAPI_RATE_LIMIT_PER_TOKEN": wl.limit}
		maps.Copy(env, r.opts.env)
		p, err := startExtauthz(ctx, extauthzSettings{name: "extauthz-" + mode + "-" + wl.name, bin: r.bin, dir: r.dir,
			databaseURL: r.dbURL, redisURL: r.redisURLs[mode], checkTimeout: r.opts.checkTimeout, profiling: r.opts.profile != "",
			env: env})
		if err != nil {
			return err
		}
		conns, err := dial(p.addr, r.opts.conns)
		if err != nil {
			p.stop()
			return err
		}
		exts = append(exts, target{name: "extauthz " + mode, proc: p, conns: conns})
	}
	defer func() {
		if insane, ok := err.(*insaneError); ok && insane != nil {
			for _, t := range exts {
				if lines := t.proc.errorLines(10); len(lines) > 0 {
					fmt.Printf("%s's last error log lines:\n%s\n", t.name, joinLines(lines))
				}
			}
		}
	}()
	if len(warmReqs) > 0 {
		t := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(exts))
		for i, ext := range exts {
			wg.Go(func() { errs[i] = warm(ctx, ext, warmReqs, 8, verifier(wl.limit)) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		fmt.Printf("warmed: %d requests sent once to each extauthz, every answer checked (%s)\n", len(warmReqs),
			time.Since(t).Round(time.Millisecond))
	}

	phases := []struct {
		label string
		rate  float64
	}{{wl.name, wl.pace}}
	if wl.pace == 0 && r.opts.rate > 0 {
		phases[0].rate = r.opts.rate
	}
	servers := []string{"null"}
	targets := []target{r.null}
	for _, t := range exts {
		servers = append(servers, t.name)
		targets = append(targets, t)
	}
	for i := 0; i < len(phases); i++ {
		ph := phases[i]
		before := scrapeAll(ctx, exts)
		stopProfiles := r.profile(ctx, exts, ph.label)
		res, err := r.bench.measure(ctx, ph.label, targets, reqs, ph.rate, wl.cold)
		stopProfiles()
		if err != nil {
			return err
		}
		after := scrapeAll(ctx, exts)
		load := "closed loop"
		if ph.rate > 0 {
			load = fmt.Sprintf("paced at %.0f Checks/s", ph.rate)
		}
		rows := res.print(os.Stdout, ph.label, load, servers, extras(before, after))
		for i := range rows {
			rows[i].rate = ph.rate
		}
		r.rows = append(r.rows, rows...)
		if err := res.sanity(ph.label, servers); err != nil {
			return err
		}
		if i == 0 && wl.halfNull && ph.rate == 0 {
			half := rows[0].rps / 2
			phases = append(phases, struct {
				label string
				rate  float64
			}{wl.name + "-half", half})
		}
	}
	return nil
}

// profile fetches a CPU profile of each extauthz over the first measured round of this phase, in the background; the
// returned function waits for them.
func (r *runner) profile(ctx context.Context, exts []target, label string) func() {
	if r.opts.profile == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for i, t := range exts {
		if t.proc.pprofAddr == "" {
			continue
		}
		// Rounds run null, ext 1, ext 2, ...: ext i's first measured window starts after the null round and those before it.
		offset := time.Duration(i+1)*(r.opts.warmup+r.opts.duration) + r.opts.warmup
		path := filepath.Join(r.opts.profile, label+"-"+t.name[len("extauthz "):]+".pprof")
		wg.Go(func() {
			select {
			case <-time.After(offset):
			case <-ctx.Done():
				return
			}
			if err := fetchProfile(ctx, t.proc.pprofAddr, r.opts.duration, path); err != nil {
				fmt.Printf("profile of %s: %v\n", t.name, err)
				return
			}
			fmt.Printf("profile of %s's first measured round: %s\n", t.name, path)
		})
	}
	return wg.Wait
}

func fetchProfile(ctx context.Context, addr string, d time.Duration, path string) error {
	secs := max(int(d.Seconds()), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+addr+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func flushRedis(ctx context.Context, url string) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	return c.FlushDB(ctx).Err()
}

// scrapeAll reads every extauthz's /metrics; a server that cannot be read has none (its extras are left out).
func scrapeAll(ctx context.Context, exts []target) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, t := range exts {
		if m, err := scrape(ctx, t.proc.adminAddr); err == nil {
			out[t.name] = m
		}
	}
	return out
}

// extras describes, per extauthz, what its own counters say happened during the rounds: where the limiter decided, and
// how many token lookups reached Postgres.
func extras(before, after map[string]map[string]float64) map[string]string {
	out := map[string]string{}
	for name, a := range after {
		b := before[name]
		d := func(series, label string) float64 { return sumSeries(a, series, label) - sumSeries(b, series, label) }
		mem, red := d("authgate_extauthz_ratelimit_decisions_total", `source="memory"`),
			d("authgate_extauthz_ratelimit_decisions_total", `source="redis"`)
		s := fmt.Sprintf("limiter memory %.0f / redis %.0f", mem, red)
		if trips := d("authgate_extauthz_ratelimit_round_trips_total", `kind="script"`); trips > 0 {
			s += fmt.Sprintf(" in %.0f round trips (%.1f per round trip)", trips, red/trips)
		}
		if miss := d("authgate_extauthz_token_cache_total", `result="miss"`); miss > 0 {
			refused := d("authgate_extauthz_suspect_lookups_total", `result="refused"`)
			s += fmt.Sprintf("; token lookups %.0f (cache misses %.0f, refused by the suspect lane %.0f)", miss-refused, miss, refused)
		}
		out[name] = s
	}
	return out
}
