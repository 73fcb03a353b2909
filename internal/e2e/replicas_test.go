package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// TestTwoReplicasOfEachService: two extauthz and two deviceflow processes on one Redis and one Postgres behave as one
// service. A login started on one deviceflow and approved through the other is delivered by the first; one token's
// budget is shared by both extauthz (60 allowed, then 429 from either); a revocation made through one deviceflow is
// honoured by both extauthz; and of the two servers' pruners, which start together, one prunes and the other reports
// that it is busy.
func TestTwoReplicasOfEachService(t *testing.T) {
	s := newStack(t, map[string]string{"REDIS_URL": testenv.StartRedisServer(t).URL()})
	expired := s.seedExpired(3)
	release := s.holdRow(expired[0])

	ext1, ext2 := s.startExtauthz(), s.startExtauthz()
	pruning := []string{"ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", "true", "OAUTH_ACCESS_TOKEN_RETENTION_DAYS", "30"}
	df1, df2 := s.startDeviceflow(pruning...), s.startDeviceflow(pruning...)

	// Whichever server took the retention lock is blocked on the held row; the other must have found the lock taken.
	logs := func() string { return df1.proc.Log() + df2.proc.Log() }
	testenv.Eventually(t, 30*time.Second, "one server's pruner reports the other busy", func() bool {
		return strings.Count(logs(), "retention prune skipped: another replica is pruning") == 1
	})
	if !s.pruneLockHeld() {
		t.Fatal("no session holds the retention lock while a pruner is said to be pruning")
	}
	release()
	testenv.Eventually(t, 30*time.Second, "the other server's pruner deletes the expired rows", func() bool {
		return s.remaining(expired) == 0
	})
	testenv.Eventually(t, 10*time.Second, "the pruner logs its work", func() bool {
		return strings.Count(logs(), `"msg":"retention prune done","deleted":3`) == 1
	})
	if n := strings.Count(logs(), "retention prune"); n != 2 {
		t.Fatalf("%d retention prune lines from two servers, want 2 (one done, one skipped):\n%s", n, logs())
	}

	// The code comes from df1, the user approves through df2, the CLI polls df1.
	ada := s.login(df1, df2, df1, "laptop")
	spendBudget(t, ada.token, ext1, ext2)

	// A second device; both replicas cache it as valid, then its owner signs out through df2.
	ci := s.login(df2, df1, df2, "ci")
	for i, e := range []*extauthz{ext1, ext2} {
		if st := e.checkStatus(t, ci.token); st != http.StatusOK {
			t.Fatalf("replica %d: the second device's token: %d", i, st)
		}
	}
	if st, body := testenv.Do(t.Context(), http.MethodDelete, df2.base+"/openapi/v1/account/sessions/self", ci.token, nil,
		nil); st != http.StatusNoContent {
		t.Fatalf("DELETE /account/sessions/self through df2: %d %s", st, body)
	}
	for i, e := range []*extauthz{ext1, ext2} {
		testenv.Eventually(t, 5*time.Second, "the revocation honoured by every extauthz", func() bool {
			return e.checkStatus(t, ci.token) == http.StatusUnauthorized
		})
		// A revocation is for good, not a moment's cache miss.
		if st := e.checkStatus(t, ci.token); st != http.StatusUnauthorized {
			t.Fatalf("replica %d allowed the revoked token again: %d", i, st)
		}
	}
	if st, _ := testenv.Do(t.Context(), http.MethodGet, df1.base+"/openapi/v1/account/sessions", ci.token, nil, nil); st !=
		http.StatusUnauthorized {
		t.Fatalf("the revoked token still lists sessions through df1: %d", st)
	}
}

// TestPruneCommandsOneAtATime: two `deviceflow prune` runs at once (two CronJobs overlapping, say): one deletes, the other
// finds the retention lock taken, says so and exits 0 without deleting anything.
func TestPruneCommandsOneAtATime(t *testing.T) {
	s := newStack(t, nil)
	expired := s.seedExpired(2)
	release := s.holdRow(expired[0])
	env := map[string]string{"DATABASE_URL": s.common["DATABASE_URL"], "OAUTH_ACCESS_TOKEN_RETENTION_DAYS": "30"}

	first := testenv.StartProcess(t, s.bins+"/deviceflow", []string{"prune"}, env, "")
	testenv.Eventually(t, 30*time.Second, "the first prune holds the retention lock", s.pruneLockHeld)
	out, err := testenv.RunCommand(t, s.bins+"/deviceflow", []string{"prune"}, env)
	if err != nil {
		t.Fatalf("the second prune failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "retention prune skipped: another replica is pruning") || strings.Contains(out, "prune done") {
		t.Fatalf("the second prune, while the first holds the lock:\n%s", out)
	}
	if n := s.remaining(expired); n != 2 {
		t.Fatalf("%d of 2 expired rows left while the first prune is blocked, want 2", n)
	}

	release()
	if err := first.Wait(30 * time.Second); err != nil {
		t.Fatalf("the first prune failed: %v\n%s", err, first.Log())
	}
	if !strings.Contains(first.Log(), `"msg":"retention prune done","deleted":2`) {
		t.Fatalf("the first prune:\n%s", first.Log())
	}
	if n := s.remaining(expired); n != 0 {
		t.Fatalf("%d expired rows left after the prune", n)
	}
}
