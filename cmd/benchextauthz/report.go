package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// insaneError means the figures were measured on something other than the allow path and must not be used.
type insaneError struct{ msg string }

func (e *insaneError) Error() string { return e.msg }

type results struct {
	rounds []*roundResult
	warmup time.Duration
}

func (r *results) add(rr *roundResult) { r.rounds = append(r.rounds, rr) }

// serverTotals merges one server's rounds: throughput over the summed windows, percentiles over every sample.
type serverTotals struct {
	requests                                    int
	elapsed                                     time.Duration
	serverCPU, clientCPU, redisCPU, postgresCPU time.Duration
	answers
}

func (r *results) totals(server string) serverTotals {
	t := serverTotals{answers: newAnswers(0)}
	for _, rr := range r.rounds {
		if rr.server != server {
			continue
		}
		t.requests += rr.completed()
		t.elapsed += rr.elapsed
		t.serverCPU += rr.serverCPU
		t.clientCPU += rr.clientCPU
		t.redisCPU += rr.redisCPU
		t.postgresCPU += rr.postgresCPU
		t.merge(rr.answers)
	}
	slices.Sort(t.latencies)
	return t
}

func (t serverTotals) rps() float64 { return float64(t.requests) / t.elapsed.Seconds() }

// row is one server's line of a workload's table, kept for the summary of aims.
type row struct {
	workload, server string
	rate             float64 // offered when paced; 0 closed loop
	rps, ratio       float64
	p50, p99         time.Duration
	p99Ratio         float64
	redisPerCheck    float64 // µs of Redis CPU per Check, the null server's background subtracted
}

// beyondBackground is a shared server's CPU per Check of t (Redis's, Postgres's) beyond its background: the servers are
// shared with whatever else runs on the machine, so what they spent per second during the null rounds, when nothing of
// the benchmark used them, is subtracted.
func beyondBackground(spent, nullSpent time.Duration, t, null serverTotals) float64 {
	return max(perRequest(spent, t.requests)-perRequest(nullSpent, null.requests)*null.rps()/t.rps(), 0)
}

// print writes one workload's table and returns its rows.
func (r *results) print(w io.Writer, label, load string, servers []string, extra map[string]string) []row {
	fmt.Fprintf(w, "\n%s, %s: %d rounds of %s per server (after %s warm-up each)\n", label, load, r.roundsOf(servers[0]),
		r.roundOf(servers[0]), r.warmup)
	fmt.Fprintf(w, "%-17s %9s %8s %8s %8s %10s %10s %11s %8s %7s %7s  %s\n", "server", "req/s", "p50", "p90", "p99",
		"server µs", "loadgen µs", "redis µs/Ck", "pg µs/Ck", "ratio", "p99 ×", "outcomes")
	null := r.totals(servers[0])
	var rows []row
	for _, name := range servers {
		t := r.totals(name)
		if t.requests == 0 {
			continue
		}
		x := row{workload: label, server: name, rps: t.rps(), p50: percentile(t.latencies, 0.50),
			p99: percentile(t.latencies, 0.99)}
		x.ratio = t.rps() / null.rps()
		x.p99Ratio = float64(x.p99) / float64(percentile(null.latencies, 0.99))
		redis, postgres := perRequest(t.redisCPU, t.requests), perRequest(t.postgresCPU, t.requests)
		if name != servers[0] {
			redis, postgres = beyondBackground(t.redisCPU, null.redisCPU, t, null), beyondBackground(t.postgresCPU, null.postgresCPU, t, null)
		}
		x.redisPerCheck = redis
		outcomes := fmt.Sprintf("allow %d", t.allows)
		for _, code := range slices.Sorted(maps.Keys(t.expected)) {
			outcomes += fmt.Sprintf(", %s %d", codeName(code), t.expected[code])
		}
		if e := extra[name]; e != "" {
			outcomes += "; " + e
		}
		fmt.Fprintf(w, "%-17s %9.0f %8s %8s %8s %10.1f %10.1f %11.1f %8.1f %7.2f %7.2f  %s\n", name, t.rps(), fmtDur(x.p50),
			fmtDur(percentile(t.latencies, 0.90)), fmtDur(x.p99), perRequest(t.serverCPU, t.requests),
			perRequest(t.clientCPU, t.requests), redis, postgres, x.ratio, x.p99Ratio, outcomes)
		rows = append(rows, x)
	}
	for _, name := range servers[1:] {
		var pairs []string
		var nullRound *roundResult
		for _, rr := range r.rounds {
			switch rr.server {
			case servers[0]:
				nullRound = rr
			case name:
				if nullRound != nil {
					pairs = append(pairs, fmt.Sprintf("%.2f", rr.rps()/nullRound.rps()))
				}
			}
		}
		fmt.Fprintf(w, "  %s / null per round: %s\n", name, strings.Join(pairs, " "))
	}
	return rows
}

func (r *results) roundsOf(server string) int {
	n := 0
	for _, rr := range r.rounds {
		if rr.server == server {
			n++
		}
	}
	return n
}

func (r *results) roundOf(server string) time.Duration {
	for _, rr := range r.rounds {
		if rr.server == server {
			return rr.elapsed
		}
	}
	return 0
}

func codeName(code int64) string {
	switch code {
	case codeResourceExhausted:
		return "429"
	case codeUnauthenticated:
		return "401"
	}
	return fmt.Sprintf("rpc %d", code)
}

// sanity fails the run if any measured Check got a wrong answer or failed at the transport: such figures are not the path
// being measured.
func (r *results) sanity(label string, servers []string) error {
	var problems []string
	for _, server := range servers {
		t := r.totals(server)
		for _, m := range []struct {
			what  string
			byMsg map[string]int
		}{{"wrong answers", t.denies}, {"gRPC errors", t.errors}} {
			if len(m.byMsg) == 0 {
				continue
			}
			problems = append(problems, fmt.Sprintf("%s %s: %d %s during measured rounds:", label, server, sum(m.byMsg), m.what))
			for _, k := range slices.Sorted(maps.Keys(m.byMsg)) {
				problems = append(problems, fmt.Sprintf("  %6d x %s", m.byMsg[k], k))
			}
		}
	}
	if len(problems) > 0 {
		return &insaneError{"figures above are not valid:\n" + strings.Join(problems, "\n")}
	}
	return nil
}

// aim is one of the performance targets for one workload and server.
type aim struct {
	workload, server, what string
	met                    func(row) bool
	measured               func(row) string
}

var aims = []aim{
	{"mix", "extauthz batched", "throughput >= 0.75 of null", func(x row) bool { return x.ratio >= 0.75 }, ratioOf},
	{"mix", "extauthz exact", "throughput >= 0.60 of null", func(x row) bool { return x.ratio >= 0.60 }, ratioOf},
	{"mix-half", "extauthz exact", "p99 <= 1.5x null's at half of null's maximum", func(x row) bool { return x.p99Ratio <= 1.5 }, p99Of},
	{"mix-half", "extauthz batched", "p99 <= 1.5x null's at half of null's maximum", func(x row) bool { return x.p99Ratio <= 1.5 }, p99Of},
	{"w1", "extauthz batched", "throughput >= 0.75 of null", func(x row) bool { return x.ratio >= 0.75 }, ratioOf},
	{"w1", "extauthz exact", "throughput >= 0.60 of null", func(x row) bool { return x.ratio >= 0.60 }, ratioOf},
	{"w2", "extauthz exact", "throughput >= 0.85 of null", func(x row) bool { return x.ratio >= 0.85 }, ratioOf},
	{"w3", "extauthz exact", "throughput >= 0.60 of null", func(x row) bool { return x.ratio >= 0.60 }, ratioOf},
	{"w4", "extauthz exact", "p99 < 5 ms at 1,000/s", func(x row) bool { return x.p99 < 5*time.Millisecond }, p99Abs},
	{"w4", "extauthz batched", "p99 < 5 ms at 1,000/s", func(x row) bool { return x.p99 < 5*time.Millisecond }, p99Abs},
}

func ratioOf(x row) string { return fmt.Sprintf("%.2f", x.ratio) }
func p99Of(x row) string   { return fmt.Sprintf("%.2fx (%s)", x.p99Ratio, fmtDur(x.p99)) }
func p99Abs(x row) string  { return fmtDur(x.p99) }

// printAims lists each target whose workload and server were measured in this run.
func printAims(w io.Writer, rows []row) {
	fmt.Fprintf(w, "\nperformance targets (this run, this machine):\n")
	for _, a := range aims {
		for _, x := range rows {
			if x.workload == a.workload && x.server == a.server {
				fmt.Fprintf(w, "  %-8s %-17s %-46s %-16s %s\n", a.workload, a.server, a.what, a.measured(x), verdict(a.met(x)))
			}
		}
	}
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

func sumCodes(m map[int64]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func joinLines(lines []string) string { return strings.Join(lines, "\n  ") }
