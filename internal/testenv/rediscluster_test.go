package testenv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// The private cluster has three masters that share the slots: keys written through a cluster client land on all of them.
func TestRedisClusterSpreadsKeys(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	if len(c.Nodes) != 3 {
		t.Fatalf("nodes = %d, want 3", len(c.Nodes))
	}
	cc := c.Client()
	ctx := context.Background()
	for i := range 60 {
		if err := cc.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		if size, err := n.Client().DBSize(ctx).Result(); err != nil || size == 0 {
			t.Errorf("node %s holds %d keys (%v): want a share of them", n.Addr, size, err)
		}
	}
}

// The private Sentinel deployment fails over: with the master killed, the sentinel names the replica within seconds.
func TestRedisSentinelFailsOver(t *testing.T) {
	s := testenv.StartRedisSentinel(t)
	if addr, err := s.MasterAddr(); err != nil || addr != s.Master.Addr {
		t.Fatalf("master = %s, %v; want %s", addr, err, s.Master.Addr)
	}
	s.Master.Stop()
	s.WaitFailover(30 * time.Second)
	role, err := s.Replica.Client().Do(context.Background(), "ROLE").Slice()
	if err != nil || len(role) == 0 || role[0] != "master" {
		t.Fatalf("the replica's ROLE after the failover = %v, %v; want master", role, err)
	}
}
