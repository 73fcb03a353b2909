package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// bench drives the servers with the same requests.
type bench struct {
	opts       options
	redisURL   string // for the Redis CPU probe (the server, whichever database)
	postmaster int    // for the Postgres CPU probe; 0 when Postgres runs elsewhere
}

// target is one server as the load generator sees it.
type target struct {
	name  string
	proc  *process
	conns []*grpc.ClientConn
	null  bool // allows everything: every allow is its correct answer
}

func dial(addr string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			return nil, err
		}
		c.Connect()
		conns[i] = c
	}
	return conns, nil
}

func closeConns(conns []*grpc.ClientConn) {
	for _, c := range conns {
		c.Close()
	}
}

// answers tallies Checks: how long each took and what was answered.
type answers struct {
	latencies []int64 // nanoseconds; sorted once merged
	allows    int
	expected  map[int64]int  // expected denies by rpc code
	denies    map[string]int // denies that are not a correct answer, described
	errors    map[string]int
}

func newAnswers(capacity int) answers {
	return answers{latencies: make([]int64, 0, capacity), expected: map[int64]int{}, denies: map[string]int{},
		errors: map[string]int{}}
}

// merge adds b's Checks to a's; the caller sorts the latencies when it has merged them all.
func (a *answers) merge(b answers) {
	a.latencies = append(a.latencies, b.latencies...)
	a.allows += b.allows
	for k, v := range b.expected {
		a.expected[k] += v
	}
	for k, v := range b.denies {
		a.denies[k] += v
	}
	for k, v := range b.errors {
		a.errors[k] += v
	}
}

// roundResult is one measured window against one server.
type roundResult struct {
	server  string
	elapsed time.Duration
	answers
	// CPU used during the measured window by the server process, the load generator, and the whole Redis server.
	serverCPU, clientCPU, redisCPU, postgresCPU time.Duration
}

func (r *roundResult) completed() int { return len(r.latencies) }
func (r *roundResult) rps() float64   { return float64(r.completed()) / r.elapsed.Seconds() }

// worker state for one round.
type worker struct{ answers }

// round runs o.warmup of unmeasured load, then measures o.duration: only Checks that start (or are due) and end inside the
// window count. With rate 0 the loop is closed: each worker sends its next Check as soon as the last is answered.
func (b *bench) round(ctx context.Context, t target, reqs []request, rate float64) (*roundResult, error) {
	o := b.opts
	start := time.Now()
	from, to := start.Add(o.warmup), start.Add(o.warmup+o.duration)
	// A server that hangs must not hang the benchmark: in-flight calls get a bounded grace after the window.
	rctx, cancel := context.WithDeadline(ctx, to.Add(10*time.Second))
	defer cancel()

	var interval time.Duration // between one worker's sends, when paced
	if rate > 0 {
		interval = time.Duration(float64(o.concurrency) / rate * float64(time.Second))
	}
	workers := make([]*worker, o.concurrency)
	expected := int(o.duration.Seconds()*60_000)/o.concurrency + 1024
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{newAnswers(expected)}
		workers[i] = w
		conn := t.conns[i%len(t.conns)]
		next := i * len(reqs) / o.concurrency // workers walk the requests from spread-out offsets
		// When paced, each worker sends on its own schedule, staggered from the others', and a Check's latency runs from
		// when it was due, so a server that falls behind is charged for the wait (no coordinated omission).
		due := start.Add(time.Duration(i) * interval / time.Duration(o.concurrency))
		rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
		own := &request{} // a copy of a request whose bearer changes on every send
		wg.Go(func() {
			var res checkResult
			for {
				req := &reqs[next]
				next++
				if next == len(reqs) {
					next = 0
				}
				send := req
				if req.secretAt > 0 {
					send = own.randomized(req, rng)
				}
				t0 := time.Now()
				if rate > 0 {
					if wait := due.Sub(t0); wait > 0 {
						time.Sleep(wait)
					}
					t0, due = due, due.Add(interval)
				}
				if !t0.Before(to) {
					return
				}
				res.raw, res.expect = nil, req.expect
				err := conn.Invoke(rctx, checkMethod, send, &res)
				t1 := time.Now()
				if rctx.Err() != nil {
					return // interrupted, or a server hung past the grace period: the round is void either way
				}
				if t0.Before(from) || t1.After(to) {
					continue
				}
				switch {
				case err != nil:
					w.errors[err.Error()]++
				case res.allowed && t.null:
					w.allows++
				case res.allowed && req.expect == expectRefused:
					w.denies[req.route+" -> a random bearer allowed"]++
				case res.allowed:
					w.allows++
				case req.expect.accepts(res.code):
					w.expected[res.code]++
				default:
					w.denies[req.route+" -> "+describeDeny(res.raw)]++
				}
				w.latencies = append(w.latencies, int64(t1.Sub(t0)))
			}
		})
	}

	cpu := newCPUProbe(t.proc, b.redisURL, b.postmaster)
	defer cpu.close()
	sleepUntil(ctx, from)
	before := cpu.read(rctx)
	sleepUntil(ctx, to)
	after := cpu.read(rctx)
	wg.Wait()
	if err := t.proc.alive(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if rctx.Err() != nil {
		return nil, &insaneError{fmt.Sprintf("%s: Checks still unanswered 10 s after the round ended", t.name)}
	}

	r := &roundResult{server: t.name, elapsed: o.duration, answers: newAnswers(0)}
	for _, w := range workers {
		r.merge(w.answers)
	}
	slices.Sort(r.latencies)
	r.serverCPU, r.clientCPU = after.server-before.server, after.client-before.client
	r.redisCPU, r.postgresCPU = after.redis-before.redis, after.postgres-before.postgres
	return r, nil
}

// randomized makes r a copy of req with a fresh random bearer secret and returns it.
func (r *request) randomized(req *request, rng *rand.Rand) *request {
	r.raw = append(r.raw[:0], req.raw...)
	randomSecret(rng, r.raw[req.secretAt:req.secretAt+43])
	return r
}

const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// randomSecret fills b with random base64url characters, six bits of one random word each.
func randomSecret(rng *rand.Rand, b []byte) {
	var v uint64
	for i := range b {
		if i%10 == 0 {
			v = rng.Uint64()
		}
		b[i] = secretAlphabet[v&63]
		v >>= 6
	}
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// processCPU is the load generator's own user+system CPU so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure alternates the targets round by round, null first, so slow drifts in the machine's load hit all alike.
// With fresh, each round sends its own share of reqs, so no server sees a request twice (a cold workload stays cold).
func (b *bench) measure(ctx context.Context, label string, targets []target, reqs []request, rate float64, fresh bool) (*results, error) {
	res := &results{warmup: b.opts.warmup}
	for i := range b.opts.rounds {
		part := reqs
		if fresh {
			part = reqs[i*len(reqs)/b.opts.rounds : (i+1)*len(reqs)/b.opts.rounds]
		}
		for _, t := range targets {
			r, err := b.round(ctx, t, part, rate)
			if err != nil {
				return nil, err
			}
			fmt.Printf("%s round %d %-17s %8.0f req/s  p50 %7s  p99 %7s  server CPU %5.1f µs/req  expected denies %d  "+
				"wrong %d  errors %d  load %s\n", label, i+1, t.name, r.rps(), fmtDur(percentile(r.latencies, 0.50)),
				fmtDur(percentile(r.latencies, 0.99)), perRequest(r.serverCPU, r.completed()), sumCodes(r.expected),
				sum(r.denies), sum(r.errors), loadAverage())
			res.add(r)
		}
	}
	return res, nil
}
