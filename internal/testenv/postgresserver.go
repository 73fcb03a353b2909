package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// PostgresServer is a private PostgreSQL cluster that a fault test may restart, crash and start again on the same port
// without touching the shared server at TEST_DATABASE_URL.
type PostgresServer struct {
	t       testing.TB
	Port    int
	bin     string
	dir     string
	running bool
}

// StartPostgresServer initialises a throw-away cluster (trust auth; fsync off, which a process crash cannot lose data to, only a machine crash) on a free loopback port and starts it; it is
// stopped and removed at cleanup. As root, the server runs as the postgres user, which Debian's package creates.
func StartPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	bin := postgresBinDir()
	if bin == "" {
		unavailable(t, "PostgreSQL server binaries (initdb, pg_ctl) not found")
	}
	dir, err := os.MkdirTemp("", "authgate-pg-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(t, "running as root without a postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &PostgresServer{t: t, Port: port, bin: bin, dir: dir}
	if out, err := s.run("initdb", "-D", s.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	s.Start()
	t.Cleanup(func() { s.stop("fast") })
	return s
}

// URL is the connection URL of the cluster's postgres database.
func (s *PostgresServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

// Start starts the server and waits until it accepts connections (pg_ctl -w).
func (s *PostgresServer) Start() {
	s.t.Helper()
	if s.running {
		return
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "+
		"-c full_page_writes=off -c max_connections=200", s.Port, s.dir)
	if out, err := s.run("pg_ctl", "-D", s.data(), "-o", opts, "-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "60",
		"start"); err != nil {
		s.t.Fatalf("testenv: start postgres: %v\n%s", err, out)
	}
	s.running = true
}

// Restart stops the server the way an operator's restart does (fast: sessions are ended, committed data kept) and starts it.
func (s *PostgresServer) Restart() {
	s.t.Helper()
	s.stop("fast")
	s.Start()
}

// Crash stops the server without a shutdown checkpoint (immediate mode, as a killed process); Start recovers it.
func (s *PostgresServer) Crash() { s.stop("immediate") }

func (s *PostgresServer) stop(mode string) {
	if !s.running {
		return
	}
	if out, err := s.run("pg_ctl", "-D", s.data(), "-m", mode, "-w", "-t", "60", "stop"); err != nil {
		s.t.Errorf("testenv: stop postgres: %v\n%s", err, out)
	}
	s.running = false
}

func (s *PostgresServer) data() string { return filepath.Join(s.dir, "data") }

func (s *PostgresServer) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	return cmd.CombinedOutput()
}

// postgresBinDir finds the newest installed server's binaries (Debian keeps them out of PATH).
func postgresBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}
