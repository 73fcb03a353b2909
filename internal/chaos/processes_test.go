package chaos_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// buildBinaries compiles the two services once; chaos runs the real processes, not in-process copies.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/extauthz", "../../cmd/deviceflow")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is one running service; its log goes to a file that the report counts lines of.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	admin   string
}

func startProcess(t *testing.T, bin string, args []string, env map[string]string, admin string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{name: filepath.Base(bin), cmd: cmd, logPath: logPath, admin: admin}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
	})
	if admin != "" {
		testenv.Eventually(t, 60*time.Second, p.name+" ready", func() bool {
			resp, err := http.Get("http://" + admin + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	return p
}

// runOnce runs a subcommand to completion (deviceflow migrate).
func runOnce(t *testing.T, bin string, args []string, env map[string]string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
}

// vitals are what a leak would show: goroutines and resident memory, from the process's own /metrics.
type vitals struct {
	goroutines int
	rssMB      float64
}

func (p *process) vitals(ctx context.Context) vitals {
	var v vitals
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return v
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "go_goroutines "):
			n, _ := strconv.ParseFloat(strings.TrimPrefix(line, "go_goroutines "), 64)
			v.goroutines = int(n)
		case strings.HasPrefix(line, "process_resident_memory_bytes "):
			n, _ := strconv.ParseFloat(strings.TrimPrefix(line, "process_resident_memory_bytes "), 64)
			v.rssMB = n / (1 << 20)
		}
	}
	return v
}

func (p *process) logLines() int {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return -1
	}
	return strings.Count(string(b), "\n")
}

func (v vitals) String() string {
	return fmt.Sprintf("%d goroutines, %.0f MB RSS", v.goroutines, v.rssMB)
}
