package redisclient_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/testenv"
)

func open(t *testing.T, opts redisclient.Options) *redisclient.Client {
	t.Helper()
	c, err := redisclient.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fromEnv loads the Redis settings the way the services do, from Dify's variables.
func fromEnv(t *testing.T, vars map[string]string) config.Redis {
	t.Helper()
	lookup := func(name string) (string, bool) {
		if name == "DB_HOST" {
			return "db", true
		}
		v, ok := vars[name]
		return v, ok
	}
	c, _, err := config.LoadExtauthz(lookup)
	if err != nil {
		t.Fatal(err)
	}
	return c.Redis
}

// On a 3-master Cluster: scripts run on one key and on keys that share a hash tag, keys spread over the nodes, and a script
// whose keys are in different slots is refused by Redis (an answer, which does not open the breaker).
func TestClusterRunsScriptsAndSpreadsKeys(t *testing.T) {
	cl := testenv.StartRedisCluster(t)
	c := open(t, redisclient.Options{Redis: fromEnv(t, map[string]string{
		"REDIS_USE_CLUSTERS": "true", "REDIS_CLUSTERS": strings.Join(cl.Addrs(), ","),
	})})
	if _, ok := c.UniversalClient.(*redis.ClusterClient); !ok {
		t.Fatalf("client is %T, want a cluster client", c.UniversalClient)
	}
	if !redisclient.IsCluster(c) || !redisclient.IsCluster(c.UniversalClient) || redisclient.IsCluster(testenv.Redis(t)) {
		t.Fatal("IsCluster: want true for the cluster's Client and its go-redis client, false for a single server")
	}
	ctx := context.Background()
	incr := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	for i, want := range []int64{5, 10} {
		if n, err := incr.Run(ctx, c, []string{"rl:token_id:abc"}, 5).Int64(); err != nil || n != want {
			t.Fatalf("script run %d = %d, %v; want %d", i, n, err, want)
		}
	}
	pair := redis.NewScript(`redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1`)
	if err := pair.Run(ctx, c, []string{"device_code:{df7}a", "user_code:{df7}b"}, "x").Err(); err != nil {
		t.Fatalf("two keys with one hash tag: %v", err)
	}
	err := pair.Run(ctx, c, []string{"device_code:a", "user_code:b"}, "x").Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("two keys in different slots: %v, want CROSSSLOT", err)
	}

	pipe := c.Pipeline()
	for i := range 90 {
		pipe.Set(ctx, "auth:token:"+strconv.Itoa(i), i, time.Minute)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline over every node: %v", err)
	}
	for i, n := range cl.Nodes {
		if size, err := n.Client().DBSize(ctx).Result(); err != nil || size == 0 {
			t.Errorf("node %d holds %d keys (%v): the keys did not spread", i, size, err)
		}
	}
	for i := range 90 {
		if v, err := c.Get(ctx, "auth:token:"+strconv.Itoa(i)).Int(); err != nil || v != i {
			t.Fatalf("GET key %d = %d, %v", i, v, err)
		}
	}
	if c.Breaker.Open() {
		t.Fatal("the breaker opened on a healthy cluster")
	}
}

// With every node hung, a few timed-out calls open the breaker: calls then fail at once; once the nodes answer, the probe
// closes it and calls succeed again.
func TestClusterBreakerOpensWhenNodesHang(t *testing.T) {
	cl := testenv.StartRedisCluster(t)
	c := open(t, redisclient.Options{Redis: config.Redis{Mode: config.RedisCluster, Addrs: cl.Addrs()}})
	ctx := context.Background()
	for i := range 10 {
		if err := c.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatalf("set before the hang: %v", err)
		}
	}
	for _, n := range cl.Nodes {
		n.Pause()
		t.Cleanup(n.Resume)
	}
	for i := 0; i < 10 && !c.Breaker.Open(); i++ {
		callCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := c.Get(callCtx, fmt.Sprint("k", i)).Err()
		cancel()
		if err == nil {
			t.Fatal("a GET answered while every node was hung")
		}
	}
	if !c.Breaker.Open() {
		t.Fatal("breaker still closed after repeated timeouts on a hung cluster")
	}
	callCtx, cancel := context.WithTimeout(ctx, time.Hour)
	err := c.Get(callCtx, "k1").Err()
	cancel()
	if !errors.Is(err, redisclient.ErrUnavailable) {
		t.Fatalf("GET with the breaker open: %v, want ErrUnavailable", err)
	}

	for _, n := range cl.Nodes {
		n.Resume()
	}
	testenv.Eventually(t, 20*time.Second, "calls succeed after the nodes resume", func() bool {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		v, err := c.Get(callCtx, "k3").Int()
		return err == nil && v == 3
	})
	if c.Breaker.Open() {
		t.Fatal("breaker open after calls succeeded")
	}
}

// Sentinel: the client follows a failover. With the master killed, Sentinel promotes the replica, and the same client's
// calls succeed again within 20 s, on the new master.
func TestSentinelClientFollowsFailover(t *testing.T) {
	s := testenv.StartRedisSentinel(t)
	c := open(t, redisclient.Options{Redis: fromEnv(t, map[string]string{
		"REDIS_USE_SENTINEL": "true", "REDIS_SENTINELS": strings.Join(s.SentinelAddrs(), ","),
		"REDIS_SENTINEL_SERVICE_NAME": testenv.SentinelMasterName,
	})})
	ctx := context.Background()
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatalf("set through Sentinel: %v", err)
	}
	// The write must reach the replica before the master dies, or the promoted replica would not have it.
	if err := c.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatalf("WAIT for the replica: %v", err)
	}

	s.Master.Stop()
	testenv.Eventually(t, 20*time.Second, "writes succeed after the failover", func() bool {
		callCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		return c.Set(callCtx, "after", "1", 0).Err() == nil
	})
	if addr, err := s.MasterAddr(); err != nil || addr != s.Replica.Addr {
		t.Fatalf("sentinel names %s (%v) as master, want the promoted replica %s", addr, err, s.Replica.Addr)
	}
	promoted := s.Replica.Client()
	for _, key := range []string{"before", "after"} {
		if v, err := promoted.Get(ctx, key).Result(); err != nil || v != "1" {
			t.Errorf("%s on the promoted replica = %q, %v", key, v, err)
		}
	}
	if v, err := c.Get(ctx, "before").Result(); err != nil || v != "1" {
		t.Errorf("read through the client after the failover = %q, %v", v, err)
	}
}

// A standalone server from Dify's variables: host, port, ACL user and password, database number.
func TestStandaloneFromDifyVariables(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	ctx := context.Background()
	admin := srv.Client()
	if err := admin.Do(ctx, "ACL", "SETUSER", "authgate", "on", ">s3cret-pw", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(srv.Addr, ":")
	vars := map[string]string{"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_USERNAME": "authgate",
		"REDIS_PASSWORD": "s3cret-pw", "REDIS_DB": "4"}
	c := open(t, redisclient.Options{Redis: fromEnv(t, vars)})
	if err := c.Set(ctx, "where", "db4", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db4 := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 4})
	defer db4.Close()
	if v, err := db4.Get(ctx, "where").Result(); err != nil || v != "db4" {
		t.Fatalf("key in database 4 = %q, %v", v, err)
	}

	vars["REDIS_PASSWORD"] = "wrong"
	bad := open(t, redisclient.Options{Redis: fromEnv(t, vars)})
	for range 5 {
		if err := bad.Ping(ctx).Err(); err == nil {
			t.Fatal("PING with a wrong password answered")
		}
	}
	if bad.Breaker.Open() {
		t.Fatal("an authentication refusal opened the breaker: Redis answered, it is up")
	}
}

// REDIS_USE_SSL with Dify's certificate settings: CERT_REQUIRED verifies against REDIS_SSL_CA_CERTS, and refuses a server
// the CA did not sign; Dify's default CERT_NONE connects without verifying.
func TestTLSFromDifyVariables(t *testing.T) {
	srv := testenv.StartRedisServerTLS(t)
	host, port, _ := strings.Cut(srv.Addr, ":")
	base := map[string]string{"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_USE_SSL": "true"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		vars map[string]string
		ok   bool
	}{
		{"verified against the CA", with("REDIS_SSL_CERT_REQS", "CERT_REQUIRED", "REDIS_SSL_CA_CERTS", srv.CAFile()), true},
		{"not signed by a trusted CA", with("REDIS_SSL_CERT_REQS", "CERT_REQUIRED"), false},
		{"CERT_NONE (Dify's default)", with(), true},
	} {
		cl := open(t, redisclient.Options{Redis: fromEnv(t, c.vars)})
		err := cl.Ping(ctx).Err()
		if (err == nil) != c.ok {
			t.Errorf("%s: PING = %v, want success %v", c.name, err, c.ok)
		}
	}
}

func TestOpenWithoutAddressIsRefused(t *testing.T) {
	if _, err := redisclient.Open(redisclient.Options{Redis: config.Redis{Mode: config.RedisCluster}}); !errors.Is(err, redisclient.ErrNoAddress) {
		t.Fatalf("Open without addresses: %v, want ErrNoAddress", err)
	}
}
