package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// The aims: extauthz keeps at least this share of the null server's throughput, with a p99 at most this multiple.
const (
	aimThroughputRatio = 0.6
	aimP99Ratio        = 1.5
)

// insaneError means the figures were measured on something other than the allow path and must not be used.
type insaneError struct{ msg string }

func (e *insaneError) Error() string { return e.msg }

type results struct {
	rounds []*roundResult
	// cache is extauthz's token cache reads by result over all rounds, warm-ups included (from its /metrics).
	cache map[string]float64
}

func (r *results) add(rr *roundResult) { r.rounds = append(r.rounds, rr) }

// serverTotals merges one server's rounds: throughput over the summed windows, percentiles over every sample.
type serverTotals struct {
	requests                       int
	elapsed                        time.Duration
	latencies                      []int64
	serverCPU, clientCPU, redisCPU time.Duration
	denies, errors                 map[string]int
}

func (r *results) totals(server string) serverTotals {
	t := serverTotals{denies: map[string]int{}, errors: map[string]int{}}
	for _, rr := range r.rounds {
		if rr.server != server {
			continue
		}
		t.requests += rr.completed()
		t.elapsed += rr.elapsed
		t.latencies = append(t.latencies, rr.latencies...)
		t.serverCPU += rr.serverCPU
		t.clientCPU += rr.clientCPU
		t.redisCPU += rr.redisCPU
		for k, v := range rr.denies {
			t.denies[k] += v
		}
		for k, v := range rr.errors {
			t.errors[k] += v
		}
	}
	slices.Sort(t.latencies)
	return t
}

func (t serverTotals) rps() float64 { return float64(t.requests) / t.elapsed.Seconds() }

func (r *results) print(w io.Writer, o options, distinct int) {
	null, ext := r.totals("null"), r.totals("extauthz")
	load := "closed loop"
	if o.rate > 0 {
		load = fmt.Sprintf("paced at %.0f Checks/s offered (throughput shows only whether a server kept up)", o.rate)
	}
	fmt.Fprintf(w, "\n%d rounds of %s per server (after %s warm-up each), %d workers over %d connections, %d distinct requests, %s\n",
		o.rounds, o.duration, o.warmup, o.concurrency, o.conns, distinct, load)
	// Redis is shared with whatever else runs on the machine, so its CPU is shown as a share of one core: the null rows show
	// the background, the extauthz rows the background plus the limiter's and cache's work.
	fmt.Fprintf(w, "%-9s %10s %9s %9s %9s %14s %15s %10s\n", "server", "req/s", "p50", "p90", "p99", "server µs/req",
		"loadgen µs/req", "redis CPU")
	for _, x := range []struct {
		name string
		t    serverTotals
	}{{"null", null}, {"extauthz", ext}} {
		fmt.Fprintf(w, "%-9s %10.0f %9s %9s %9s %14.1f %15.1f %9.0f%%\n", x.name, x.t.rps(),
			fmtDur(percentile(x.t.latencies, 0.50)), fmtDur(percentile(x.t.latencies, 0.90)), fmtDur(percentile(x.t.latencies, 0.99)),
			perRequest(x.t.serverCPU, x.t.requests), perRequest(x.t.clientCPU, x.t.requests),
			100*x.t.redisCPU.Seconds()/x.t.elapsed.Seconds())
	}
	if null.requests == 0 || ext.requests == 0 {
		return
	}
	tr := ext.rps() / null.rps()
	pr := float64(percentile(ext.latencies, 0.99)) / float64(percentile(null.latencies, 0.99))
	fmt.Fprintf(w, "extauthz / null: throughput %.2f (aim >= %.1f: %s), p99 %.2fx (aim <= %.1fx: %s)\n",
		tr, aimThroughputRatio, verdict(tr >= aimThroughputRatio), pr, aimP99Ratio, verdict(pr <= aimP99Ratio))
	var pairs []string
	for i := 0; i+1 < len(r.rounds); i += 2 {
		n, e := r.rounds[i], r.rounds[i+1]
		pairs = append(pairs, fmt.Sprintf("%.2f", e.rps()/n.rps()))
	}
	fmt.Fprintf(w, "throughput ratio per round pair: %s\n", strings.Join(pairs, " "))
	var cache []string
	for _, k := range slices.Sorted(maps.Keys(r.cache)) {
		cache = append(cache, fmt.Sprintf("%s %.0f", k, r.cache[k]))
	}
	fmt.Fprintf(w, "extauthz token cache reads during the rounds (its /metrics): %s\n", strings.Join(cache, ", "))
}

// sanity fails the run if any measured Check was not an allow or failed at the transport: such figures are not the allow path.
func (r *results) sanity() error {
	var problems []string
	for _, server := range []string{"null", "extauthz"} {
		t := r.totals(server)
		for _, m := range []struct {
			what  string
			byMsg map[string]int
		}{{"denies", t.denies}, {"gRPC errors", t.errors}} {
			if len(m.byMsg) == 0 {
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: %d %s during measured rounds:", server, sum(m.byMsg), m.what))
			for _, k := range slices.Sorted(maps.Keys(m.byMsg)) {
				problems = append(problems, fmt.Sprintf("  %6d x %s", m.byMsg[k], k))
			}
		}
	}
	if len(problems) > 0 {
		return &insaneError{"figures above are not valid:\n" + strings.Join(problems, "\n")}
	}
	fmt.Println("sanity: every measured Check was an allow; no gRPC errors")
	return nil
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

// percentile of sorted nanosecond samples (nearest rank).
func percentile(sorted []int64, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return time.Duration(sorted[min(max(i, 0), len(sorted)-1)])
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func perRequest(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / float64(n)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func joinLines(lines []string) string { return strings.Join(lines, "\n  ") }
