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
	server, client, redis, postgres time.Duration
}

type cpuProbe struct {
	proc       *process
	rdb        *redis.Client
	postmaster int // 0: Postgres is not on this machine
}

func newCPUProbe(p *process, redisURL string, postmaster int) *cpuProbe {
	probe := &cpuProbe{proc: p, postmaster: postmaster}
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
	if c.postmaster > 0 {
		s.postgres = postgresCPU(c.postmaster)
	}
	return s
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procStat is a process's parent and CPU times from /proc/<pid>/stat: user and system time, its own and that of its
// children it has waited for.
func procStat(pid int) (ppid int, own, children time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces: the fields counted here start after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	n := func(k int) time.Duration {
		v, _ := strconv.ParseInt(f[k-3], 10, 64)
		return time.Duration(v) * clockTick
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, n(14) + n(15), n(16) + n(17), true
}

// localPostmaster is the postmaster of the Postgres backend pid when that backend is a process of this machine, else 0
// (a server elsewhere: a process here with the same number is someone else's).
func localPostmaster(backend int) int {
	isPostgres := func(pid int) bool {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return err == nil && strings.HasPrefix(string(comm), "postgres")
	}
	ppid, _, _, ok := procStat(backend)
	if !ok || !isPostgres(backend) || !isPostgres(ppid) {
		return 0
	}
	return ppid
}

// postgresCPU is the CPU time of the Postgres server whose postmaster is pid: its own, its live children's (backends and
// background workers) and that of the children it has reaped, so a backend that exits between two samples still counts.
// Like Redis's, it includes any other user's load.
func postgresCPU(pid int) time.Duration {
	_, own, reaped, ok := procStat(pid)
	if !ok {
		return 0
	}
	total := own + reaped
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, t, _, ok := procStat(child); ok && ppid == pid {
			total += t
		}
	}
	return total
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
