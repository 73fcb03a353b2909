package main

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// CPU time says where a request's cost goes, which throughput alone cannot on a shared 2-core machine.
type cpuSample struct {
	server, client, redis time.Duration
}

type cpuProbe struct {
	proc *process
	rdb  *redis.Client
}

func newCPUProbe(p *process, redisURL string) *cpuProbe {
	probe := &cpuProbe{proc: p}
	if opts, err := redis.ParseURL(redisURL); err == nil {
		probe.rdb = redis.NewClient(opts)
	}
	return probe
}

func (c *cpuProbe) close() {
	if c.rdb != nil {
		c.rdb.Close()
	}
}

// read takes all three samples; a figure that cannot be read is 0, which the report shows as such.
func (c *cpuProbe) read(ctx context.Context) cpuSample {
	var s cpuSample
	s.server, _ = c.proc.cpuTime()
	s.client = processCPU()
	if c.rdb != nil {
		s.redis = redisCPU(ctx, c.rdb)
	}
	return s
}

// redisCPU is used_cpu_user + used_cpu_sys of the whole Redis server (it includes any other user's load).
func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for line := range strings.SplitSeq(info, "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_user" || name == "used_cpu_sys") {
			v, _ := strconv.ParseFloat(value, 64)
			total += v
		}
	}
	return time.Duration(total * float64(time.Second))
}

func numCPU() int { return runtime.NumCPU() }

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
