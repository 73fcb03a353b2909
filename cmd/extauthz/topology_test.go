package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// TestChecksOnRedisCluster: extauthz configured with Dify's REDIS_USE_CLUSTERS variables (no REDIS_URL) authenticates a
// token, counts it in Dify's rate-limit window and caches it, all on a 3-master Redis Cluster.
func TestChecksOnRedisCluster(t *testing.T) {
	cl := testenv.StartRedisCluster(t)
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	s := w.start(map[string]string{"REDIS_URL": "", "REDIS_USE_CLUSTERS": "true", "REDIS_CLUSTERS": strings.Join(cl.Addrs(), ",")})
	for i, want := range []string{"59", "58"} {
		resp := s.check(t, "GET", "/openapi/v1/me", bearer(ada))
		expectAllow(t, resp, accountHeaders(accountActive, "ada@example.com", adaID))
		if rl := rateHeaders(resp); rl["ratelimit-remaining"] != want {
			t.Errorf("check %d on the cluster: RateLimit headers %v, want remaining %s", i, rl, want)
		}
	}
	// The cache entry is written as the first Check answers.
	testenv.Eventually(t, 5*time.Second, "the token cache entry on the cluster", func() bool {
		return cl.Client().Exists(context.Background(), "auth:token:"+tokens.Hash(ada)).Val() == 1
	})
}

// TestChecksFollowSentinelFailover: extauthz configured with Dify's REDIS_USE_SENTINEL variables keeps authenticating when
// Sentinel's master is killed, and its limiter counts again on the promoted replica within 20 s, without a restart.
func TestChecksFollowSentinelFailover(t *testing.T) {
	sen := testenv.StartRedisSentinel(t)
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	s := w.start(map[string]string{"REDIS_URL": "", "REDIS_USE_SENTINEL": "true",
		"REDIS_SENTINELS": strings.Join(sen.SentinelAddrs(), ","), "REDIS_SENTINEL_SERVICE_NAME": testenv.SentinelMasterName})
	resp := s.check(t, "GET", "/openapi/v1/me", bearer(ada))
	expectAllow(t, resp, adaH)
	if rl := rateHeaders(resp); rl["ratelimit-remaining"] != "59" {
		t.Fatalf("through Sentinel: RateLimit headers %v", rl)
	}

	sen.Master.Stop()
	// Every Check meanwhile is decided from Postgres (the limiter fails open by default): the token keeps working.
	testenv.Eventually(t, 20*time.Second, "the limiter counts again on the promoted replica", func() bool {
		resp := s.check(t, "GET", "/openapi/v1/me", bearer(ada))
		expectAllow(t, resp, adaH)
		return rateHeaders(resp)["ratelimit-remaining"] != ""
	})
	if addr, err := sen.MasterAddr(); err != nil || addr != sen.Replica.Addr {
		t.Fatalf("sentinel names %s (%v), want the promoted replica %s", addr, err, sen.Replica.Addr)
	}
}
