package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Settings of the measured extauthz that differ from its defaults, and why.
const (
	// Counting on every request but never tripping: at 30k Checks/s over 1000 tokens a token sees ~2k requests a minute.
	benchRateLimit = "1000000"
	// Long enough that no entry expires during a run, so every measured Check of a warm workload is a cache hit.
	benchTokenCacheTTL = "10m"
)

// process is one server under test, run as a subprocess so that every server is measured the same way.
type process struct {
	name      string
	addr      string // gRPC
	adminAddr string // extauthz only
	pprofAddr string // extauthz built with -profile only
	cmd       *exec.Cmd
	logPath   string
	exited    chan struct{}
	waitErr   error
}

// buildExtauthz builds cmd/extauthz into dir; with profiling, with the benchpprof tag (net/http/pprof on
// EXTAUTHZ_PPROF_ADDR).
func buildExtauthz(ctx context.Context, dir string, profiling bool) (string, error) {
	bin := filepath.Join(dir, "extauthz")
	args := []string{"build", "-o", bin}
	if profiling {
		args = append(args, "-tags", "benchpprof")
	}
	build := exec.CommandContext(ctx, "go", append(args, "github.com/authgate/authgate/cmd/extauthz")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	t := time.Now()
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building cmd/extauthz (run from the module root): %w", err)
	}
	fmt.Printf("built cmd/extauthz in %s\n", time.Since(t).Round(time.Millisecond))
	return bin, nil
}

// startNull starts the null server (this binary's "null" subcommand) and waits until it serves.
func startNull(ctx context.Context, dir string) (*process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addrs, err := freeAddrs(1)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(dir, "null", self, []string{nullCommand, "-addr", addrs[0]}, nil)
	if err != nil {
		return nil, err
	}
	p.addr = addrs[0]
	if err := p.waitServing(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// extauthzSettings are one extauthz process's: where it runs and what differs from the product's defaults.
type extauthzSettings struct {
	name, bin, dir        string
	databaseURL, redisURL string
	checkTimeout          string
	profiling             bool
	env                   map[string]string // workload and mode settings
}

// startExtauthz starts one extauthz and waits until it serves.
func startExtauthz(ctx context.Context, s extauthzSettings) (*process, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	env := []string{
		"DATABASE_URL=" + s.databaseURL,
		"REDIS_URL=" + s.redisURL,
		"EXTAUTHZ_GRPC_ADDR=" + addrs[0],
		"ADMIN_ADDR=" + addrs[1],
		// A limiter that cannot count turns into a 503 deny, which the sanity check catches, instead of a silent skip.
		"RATE_LIMIT_FAIL_OPEN=false",
		"TOKEN_CACHE_TTL=" + benchTokenCacheTTL,
		// Stopped between workloads: no proxy needs a drain.
		"SHUTDOWN_DRAIN_DELAY=0",
	}
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	if s.checkTimeout != "" {
		env = append(env, "CHECK_TIMEOUT="+s.checkTimeout)
	}
	var pprofAddr string
	if s.profiling {
		more, err := freeAddrs(1)
		if err != nil {
			return nil, err
		}
		pprofAddr = more[0]
		env = append(env, "EXTAUTHZ_PPROF_ADDR="+pprofAddr)
	}
	p, err := startProcess(s.dir, s.name, s.bin, nil, env)
	if err != nil {
		return nil, err
	}
	p.addr, p.adminAddr, p.pprofAddr = addrs[0], addrs[1], pprofAddr
	if err := p.waitServing(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// freeAddrs picks loopback ports the kernel considers free; the servers bind them a moment later.
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, ln.Addr().String())
		defer ln.Close() // held until all are picked, so no two are the same
	}
	return addrs, nil
}

// inheritedEnv passes on only what shapes a Go process's performance, so a stray variable in the caller's environment
// (ENTERPRISE_ENABLED, say) cannot change what is measured.
func inheritedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG":
			env = append(env, kv)
		}
	}
	return env
}

func startProcess(dir, name, bin string, args, env []string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(inheritedEnv(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// waitServing polls grpc.health.v1 until the server reports SERVING, or fails early if the process exits.
func (p *process) waitServing(ctx context.Context, limit time.Duration) error {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(limit)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before serving (%v); its log:\n%s", p.name, p.waitErr, p.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not SERVING after %s (last: %v); its log:\n%s", p.name, limit, err, p.logTail())
		}
	}
}

func (p *process) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	const keep = 4000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// errorLines returns the last n lines of the process's log at level WARN or ERROR: why extauthz denied with 503, when it did.
func (p *process) errorLines(n int) []string {
	b, _ := os.ReadFile(p.logPath)
	var lines []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"level":"WARN"`) {
			lines = append(lines, line)
		}
	}
	return lines[max(len(lines)-n, 0):]
}

// alive reports an early exit, which would otherwise show up only as a wall of connection errors.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited during the run (%v); its log:\n%s", p.name, p.waitErr, p.logTail())
	default:
		return nil
	}
}

// cpuTime is the user+system CPU the process has used so far, from /proc (clock ticks of 10 ms).
func (p *process) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; the fields after its closing parenthesis are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick, nil
}

// stop sends SIGTERM (extauthz drains and exits), then kills the process if it is still running after a grace period.
func (p *process) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
