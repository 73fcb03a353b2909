package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the service name the private Sentinel monitors (REDIS_SENTINEL_SERVICE_NAME).
const SentinelMasterName = "authgate-test"

// RedisSentinel is a private Sentinel deployment: a master, one replica of it and one sentinel (quorum 1) that promotes the
// replica about a second after the master stops answering. Every process is a RedisServer a fault test may Stop or Pause.
type RedisSentinel struct {
	t        testing.TB
	Master   *RedisServer
	Replica  *RedisServer
	Sentinel *RedisServer
	sc       *redis.SentinelClient
}

// StartRedisSentinel starts the master and its replica, waits until the replica has synchronised, then starts
// `redis-server --sentinel` and waits until it monitors both. Everything is killed at cleanup.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	// Each in a directory of its own: a replica writes the data set it receives to dump.rdb in its working directory.
	inDir := func(port string) []string { return []string{"--port", port, "--dir", t.TempDir()} }
	s := &RedisSentinel{t: t, Master: startRedisServerWith(t, inDir), Replica: startRedisServerWith(t, inDir)}
	host, port, _ := net.SplitHostPort(s.Master.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	replica := s.Replica.Client()
	if err := replica.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatalf("testenv: REPLICAOF: %v", err)
	}
	s.wait(30*time.Second, "replica synchronised", func() bool {
		info, err := replica.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})

	// Sentinel rewrites its configuration file, so it gets one of its own in a writable directory.
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`sentinel monitor %[1]s %[2]s %[3]s 1
sentinel down-after-milliseconds %[1]s 1000
sentinel failover-timeout %[1]s 10000
sentinel parallel-syncs %[1]s 1
`, SentinelMasterName, host, port)), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s.Sentinel = startRedisServerWith(t, func(port string) []string {
		return []string{conf, "--sentinel", "--port", port}
	})
	s.sc = redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = s.sc.Close() })
	s.wait(30*time.Second, "sentinel sees the replica", func() bool {
		replicas, err := s.sc.Replicas(context.Background(), SentinelMasterName).Result()
		if err != nil || len(replicas) != 1 {
			return false
		}
		return replicas[0]["flags"] == "slave" && replicas[0]["master-link-status"] == "ok"
	})
	return s
}

// SentinelAddrs are the sentinels' addresses (REDIS_SENTINELS).
func (s *RedisSentinel) SentinelAddrs() []string { return []string{s.Sentinel.Addr} }

// MasterAddr is the master's address as the sentinel currently names it.
func (s *RedisSentinel) MasterAddr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	hp, err := s.sc.GetMasterAddrByName(ctx, SentinelMasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// WaitFailover waits until the sentinel names the replica as master, failing the test after within.
func (s *RedisSentinel) WaitFailover(within time.Duration) {
	s.t.Helper()
	s.wait(within, "sentinel promotes the replica", func() bool {
		addr, err := s.MasterAddr()
		return err == nil && addr == s.Replica.Addr
	})
}

func (s *RedisSentinel) wait(within time.Duration, what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("testenv: %s: not reached within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a bounded wait
	}
}
