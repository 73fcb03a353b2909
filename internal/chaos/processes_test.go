package chaos_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/testenv"
)

// buildBinaries compiles the two services once; chaos runs the real processes, not in-process copies.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := testenv.BuildServices(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// process is one running service; its log goes to a file that the report counts lines of.
type process struct{ *testenv.Process }

func startProcess(t *testing.T, bin string, args []string, env map[string]string, admin string) *process {
	t.Helper()
	return &process{testenv.StartProcess(t, bin, args, env, admin)}
}

// runOnce runs a subcommand to completion (deviceflow migrate).
func runOnce(t *testing.T, bin string, args []string, env map[string]string) {
	t.Helper()
	if out, err := testenv.RunCommand(t, bin, args, env); err != nil {
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
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+"/metrics", nil)
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
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return -1
	}
	return strings.Count(string(b), "\n")
}

func (v vitals) String() string {
	return fmt.Sprintf("%d goroutines, %.0f MB RSS", v.goroutines, v.rssMB)
}
