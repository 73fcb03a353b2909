package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a private Redis Cluster of three masters (no replicas) on loopback ports. Each node is a RedisServer, so
// a fault test may Pause, Resume, Stop and Start nodes one by one.
type RedisCluster struct {
	t     testing.TB
	Nodes []*RedisServer
}

// StartRedisCluster starts three `redis-server --cluster-enabled yes` nodes, joins them with `redis-cli --cluster create`
// (the 16384 slots split in three) and waits until every node reports cluster_state:ok. Everything is killed at cleanup.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s not installed: %v", tool, err)
		}
	}
	dir := t.TempDir()
	c := &RedisCluster{t: t}
	for range 3 {
		bus := freePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", bus))
		c.Nodes = append(c.Nodes, startRedisServerWith(t, func(port string) []string {
			// A short node timeout: a hung node is marked failing in 2 s, not 15.
			return []string{"--port", port, "--dir", dir, "--cluster-enabled", "yes", "--cluster-config-file", conf,
				"--cluster-port", fmt.Sprint(bus), "--cluster-node-timeout", "2000"}
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(30 * time.Second)
	return c
}

// Addrs are the nodes' host:port addresses, the seed list a cluster client needs.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Client returns a plain go-redis cluster client (no breaker, library defaults), closed at cleanup: for a test to set up
// and inspect data independently of the client under test.
func (c *RedisCluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// WaitHealthy waits until every node reports cluster_state:ok with all slots assigned, failing the test after within.
func (c *RedisCluster) WaitHealthy(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		if last = c.unhealthy(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testenv: redis cluster not healthy within %v: %s", within, last)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a bounded wait
	}
}

// unhealthy says what is not yet right, or "" when every node serves the whole slot map.
func (c *RedisCluster) unhealthy() string {
	for _, n := range c.Nodes {
		rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := rc.ClusterInfo(ctx).Result()
		cancel()
		rc.Close()
		if err != nil {
			return fmt.Sprintf("%s: %v", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") ||
			!strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(c.Nodes))) {
			return fmt.Sprintf("%s: %s", n.Addr, strings.Join(strings.Fields(info)[:min(6, len(strings.Fields(info)))], " "))
		}
	}
	return ""
}

// startRedisServerWith starts redis-server on a free loopback port with the arguments argv gives; killed at cleanup.
func startRedisServerWith(t testing.TB, argv func(port string) []string) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(t, "redis-server not installed: %v", err)
	}
	s := &RedisServer{t: t, Addr: net.JoinHostPort("127.0.0.1", fmt.Sprint(freePort(t))), argv: argv}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// freePort returns a loopback TCP port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
