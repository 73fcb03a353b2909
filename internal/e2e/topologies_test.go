package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// TestDeviceLoginOnRedisCluster: both services, two replicas each, on a 3-master Redis Cluster: whole device logins, one
// token's budget shared by both extauthz, listing sessions, revoking another session and one's own (honoured by both
// extauthz), pruning, and the keys all this leaves spread over more than one node.
func TestDeviceLoginOnRedisCluster(t *testing.T) {
	cl := testenv.StartRedisCluster(t)
	s := newStack(t, map[string]string{"REDIS_USE_CLUSTERS": "true", "REDIS_CLUSTERS": strings.Join(cl.Addrs(), ",")})
	expired := s.seedExpired(2)
	ext1, ext2 := s.startExtauthz(), s.startExtauthz()
	df1 := s.startDeviceflow("ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", "true")
	df2 := s.startDeviceflow()
	testenv.Eventually(t, 30*time.Second, "the server's pruner deletes the expired rows", func() bool {
		return s.remaining(expired) == 0
	})

	// Logins left pending, as users who walked away leave them: their keys sit in 16 hash-tagged slots.
	for i := range 6 {
		s.requestCode(df2, fmt.Sprintf("pending-%d", i))
	}
	ada := s.login(df1, df2, df1, "laptop")
	ci := s.login(df2, df1, df2, "ci")
	spendBudget(t, ada.token, ext1, ext2)
	bucket := "rl:token_id:token:" + tokens.Hash(ada.token) // Dify's bucket name
	if n, err := cl.Client().ZCard(context.Background(), bucket).Result(); err != nil || n != perToken {
		t.Fatalf("the token's bucket on the cluster holds %d entries (%v), want %d", n, err, perToken)
	}

	ids, current := sessionIDs(t, df1, ci.token)
	if !slices.Contains(ids, ada.id) || !slices.Contains(ids, ci.id) || current != ci.id {
		t.Fatalf("GET /account/sessions with the ci token: %v, current %q; want both sessions, ci current", ids, current)
	}

	// From the laptop, the user signs the ci device out; both replicas had it cached as valid.
	for i, e := range []*extauthz{ext1, ext2} {
		if st := e.checkStatus(t, ci.token); st != http.StatusOK {
			t.Fatalf("replica %d: the ci token before its revocation: %d", i, st)
		}
	}
	if st, body := testenv.Do(t.Context(), http.MethodDelete, df2.base+"/openapi/v1/account/sessions/"+ci.id, ada.token, nil,
		nil); st != http.StatusNoContent {
		t.Fatalf("DELETE /account/sessions/{ci} with the laptop's token: %d %s", st, body)
	}
	for _, e := range []*extauthz{ext1, ext2} {
		testenv.Eventually(t, 5*time.Second, "the revocation honoured by every extauthz", func() bool {
			return e.checkStatus(t, ci.token) == http.StatusUnauthorized
		})
	}
	if ids, _ := sessionIDs(t, df2, ada.token); !slices.Equal(ids, []string{ada.id}) {
		t.Fatalf("sessions after revoking ci: %v, want only the laptop's", ids)
	}

	// Then signs the laptop itself out.
	if st, body := testenv.Do(t.Context(), http.MethodDelete, df1.base+"/openapi/v1/account/sessions/self", ada.token, nil,
		nil); st != http.StatusNoContent {
		t.Fatalf("DELETE /account/sessions/self: %d %s", st, body)
	}
	if st, _ := testenv.Do(t.Context(), http.MethodGet, df2.base+"/openapi/v1/account/sessions", ada.token, nil, nil); st !=
		http.StatusUnauthorized {
		t.Fatalf("the self-revoked token still lists sessions: %d", st)
	}
	for _, e := range []*extauthz{ext1, ext2} {
		// Over its budget as well, so either denial will do; an allow will not.
		if st := e.checkStatus(t, ada.token); st == http.StatusOK {
			t.Fatal("a self-revoked token was allowed")
		}
	}

	// Where it all landed: per-token buckets and cache entries, device logins and per-address budgets, over several nodes.
	var mu sync.Mutex
	perNode := map[string]int{}
	err := cl.Client().ForEachMaster(context.Background(), func(ctx context.Context, node *redis.Client) error {
		n, err := node.DBSize(ctx).Result()
		mu.Lock()
		perNode[node.Options().Addr] = int(n)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	holding := 0
	for _, n := range perNode {
		if n > 0 {
			holding++
		}
	}
	if holding < 2 {
		t.Fatalf("keys per master %v: everything on one node", perNode)
	}
	t.Logf("keys per master: %v", perNode)
}

// TestSentinelFailoverUnderLoad: both services on a master, a replica and Sentinel. Logins, the shared budget and
// revocations work; then the master is killed while Checks keep coming, Sentinel promotes the replica, and within 20 s a
// new device login completes and its token is counted by both extauthz, restarting nothing. Throughout, a revoked token is
// never allowed and every Check is answered; afterwards tokens and revocations made before the failover are intact, even
// for an extauthz that starts with nothing in memory.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	sen := testenv.StartRedisSentinel(t)
	s := newStack(t, map[string]string{"REDIS_USE_SENTINEL": "true", "REDIS_SENTINELS": strings.Join(sen.SentinelAddrs(), ","),
		"REDIS_SENTINEL_SERVICE_NAME": testenv.SentinelMasterName})
	ext1, ext2 := s.startExtauthz(), s.startExtauthz()
	df := s.startDeviceflow()
	replicas := []*extauthz{ext1, ext2}

	ada := s.login(df, df, df, "laptop")
	spendBudget(t, ada.token, ext1, ext2)
	keep := s.login(df, df, df, "desktop")
	ci := s.login(df, df, df, "ci")
	if st, body := testenv.Do(t.Context(), http.MethodDelete, df.base+"/openapi/v1/account/sessions/self", ci.token, nil,
		nil); st != http.StatusNoContent {
		t.Fatalf("DELETE /account/sessions/self: %d %s", st, body)
	}
	for _, e := range replicas {
		testenv.Eventually(t, 5*time.Second, "the revocation honoured by every extauthz", func() bool {
			return e.checkStatus(t, ci.token) == http.StatusUnauthorized
		})
	}
	load := s.login(df, df, df, "load") // spent by the load below, so keep's budget stays whole

	// Load: Checks of a live and of the revoked token, alternately through both replicas, until the end of the test.
	var sent, revokedAllowed, unanswered, afterKill atomic.Int64
	var killed atomic.Bool
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			token := load.token
			if i%2 == 1 {
				token = ci.token
			}
			resp, err := replicas[i/2%2].checkMe(ctx, token)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				unanswered.Add(1)
			case token == ci.token && status(resp) == http.StatusOK:
				revokedAllowed.Add(1)
			}
			sent.Add(1)
			if killed.Load() {
				afterKill.Add(1)
			}
			time.Sleep(10 * time.Millisecond) // pacing of the load generator: ~100 Checks/s
		}
	})
	defer func() { stop(); wg.Wait() }()
	testenv.Eventually(t, 10*time.Second, "load running", func() bool { return sent.Load() >= 10 })

	sen.Master.Stop()
	killed.Store(true)
	killedAt := time.Now()
	var after session
	attempt := 0
	testenv.Eventually(t, 20*time.Second, "a new login completes and both extauthz count its token", func() bool {
		if after.token == "" {
			attempt++
			sess, err := s.tryLogin(context.Background(), df, df, df, fmt.Sprintf("after-failover-%d", attempt))
			if err != nil {
				return false
			}
			after = sess
		}
		for _, e := range replicas {
			resp, err := e.checkMe(context.Background(), after.token)
			if err != nil || status(resp) != http.StatusOK || rateLimitRemaining(resp) == "" {
				return false
			}
		}
		return true
	})
	t.Logf("a new login and counted Checks %v after the master was killed", time.Since(killedAt).Round(100*time.Millisecond))
	if addr, err := sen.MasterAddr(); err != nil || addr != sen.Replica.Addr {
		t.Fatalf("sentinel names %s (%v) as master, want the promoted replica %s", addr, err, sen.Replica.Addr)
	}
	stop()
	wg.Wait()
	if afterKill.Load() == 0 {
		t.Fatal("no Check was sent after the master was killed: the load did not overlap the failover")
	}
	if n := revokedAllowed.Load(); n > 0 {
		t.Fatalf("the revoked token was allowed %d times during the failover", n)
	}
	if n := unanswered.Load(); n > 0 {
		t.Fatalf("%d Checks got no answer during the failover", n)
	}

	// What was committed before the failover, seen by the old replicas and by a new one with nothing in memory.
	fresh := s.startExtauthz()
	for i, e := range []*extauthz{ext1, ext2, fresh} {
		if st := e.checkStatus(t, keep.token); st != http.StatusOK {
			t.Fatalf("replica %d: a token minted before the failover: %d", i, st)
		}
		if st := e.checkStatus(t, ci.token); st != http.StatusUnauthorized {
			t.Fatalf("replica %d: a token revoked before the failover: %d", i, st)
		}
	}
	ids, _ := sessionIDs(t, df, keep.token)
	for _, want := range []string{ada.id, keep.id, load.id, after.id} {
		if !slices.Contains(ids, want) {
			t.Fatalf("sessions after the failover %v lack %s", ids, want)
		}
	}
	if slices.Contains(ids, ci.id) {
		t.Fatalf("the session revoked before the failover is listed again: %v", ids)
	}
}
