package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BuildServices compiles cmd/extauthz and cmd/deviceflow into dir: tests that need the two services as separate processes
// (the commands are both package main) run these binaries. The build cache makes every build after the first a link.
func BuildServices(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/authgate/authgate/cmd/extauthz", "github.com/authgate/authgate/cmd/deviceflow")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: build the services: %w\n%s", err, out)
	}
	return nil
}

// FreeAddr is a loopback host:port nothing listens on right now, for a process told where to listen.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Process is a service running as a child process; its stdout and stderr go to a file the test can read.
type Process struct {
	Name    string
	Admin   string // the admin server's host:port ("" if it has none)
	LogPath string
	t       testing.TB
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed once the process has exited; exitErr is set before
	exitErr error
}

// StartProcess runs bin with args and exactly the variables in env (plus PATH and HOME), and, when admin is set, waits until
// GET http://admin/readyz answers 200. It is stopped with SIGTERM at cleanup (killed if it has not exited 30 s later).
func StartProcess(t testing.TB, bin string, args []string, env map[string]string, admin string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = processEnv(env)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("testenv: start %s: %v", bin, err)
	}
	p := &Process{Name: filepath.Base(bin), Admin: admin, LogPath: logPath, t: t, cmd: cmd, logFile: logFile,
		done: make(chan struct{})}
	go func() { p.exitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	if admin != "" {
		deadline := time.Now().Add(60 * time.Second)
		for !p.ready() {
			select {
			case <-p.done:
				t.Fatalf("testenv: %s exited before it was ready:\n%s", p.Name, p.Log())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("testenv: %s not ready within 60 s:\n%s", p.Name, p.Log())
			}
			time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
		}
	}
	return p
}

func (p *Process) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.Admin + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop sends SIGTERM and waits for the process to exit (a kill after 30 s). Safe to call more than once.
func (p *Process) Stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = p.logFile.Close()
}

// Wait waits for the process to exit by itself and returns its exit error (an *exec.ExitError when it exited non-zero); the
// test fails if it is still running after within.
func (p *Process) Wait(within time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitErr
	case <-time.After(within):
		p.t.Fatalf("testenv: %s still running after %v:\n%s", p.Name, within, p.Log())
		return nil
	}
}

// Log is everything the process wrote so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	return string(b)
}

// RunCommand runs bin with args and exactly the variables in env (plus PATH and HOME) to completion, and returns what it
// wrote and its error (an *exec.ExitError when it exited non-zero).
func RunCommand(t testing.TB, bin string, args []string, env map[string]string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = processEnv(env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func processEnv(env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}
