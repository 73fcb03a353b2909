package deviceflow

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

func issueForTest(t *testing.T, st *State, now time.Time) (string, Authorization) {
	t.Helper()
	dc, a, err := st.Issue(context.Background(), Authorization{ClientID: "difyctl", DeviceLabel: "laptop", CreatorIP: "10.0.0.1",
		Interval: 5 * time.Second, CreatedAt: now, ExpiresAt: now.Add(900 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return dc, a
}

func TestStateKeysShareAHashTag(t *testing.T) {
	rdb := testenv.Redis(t)
	st := NewState(rdb)
	now := time.Now()
	dc, a := issueForTest(t, st, now)
	dkey, ukey := deviceKey(hashDeviceCode(dc)), userKey(a.UserCode)
	tag := func(k string) string { return k[strings.Index(k, "{") : strings.Index(k, "}")+1] }
	if tag(dkey) != tag(ukey) {
		t.Fatalf("keys %s and %s do not share a hash tag", dkey, ukey)
	}
	if !strings.HasPrefix(dkey, "device_code:") || !strings.HasSuffix(dkey, hashDeviceCode(dc)) || !strings.HasSuffix(ukey, a.UserCode) {
		t.Fatalf("unexpected key names %s, %s", dkey, ukey)
	}
	ttl := rdb.PTTL(context.Background(), dkey).Val()
	if ttl <= 890*time.Second || ttl > 900*time.Second {
		t.Fatalf("device key TTL %v, want the remaining 900 s", ttl)
	}
	if got := rdb.Get(context.Background(), ukey).Val(); got != hashDeviceCode(dc) {
		t.Fatalf("user_code key holds %q", got)
	}
	if rdb.Exists(context.Background(), "device_code:"+dc).Val() != 0 || strings.Contains(strings.Join(rdb.HVals(context.Background(), dkey).Val(), " "), dc) {
		t.Fatal("the device code itself is stored")
	}
}

func TestStatePollLifecycle(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	st := NewState(rdb)
	now := time.Now()
	dc, a := issueForTest(t, st, now)

	step := func(at time.Duration, basic bool, want PollOutcome) Authorization {
		t.Helper()
		got, auth, err := st.Poll(ctx, dc, "difyctl", now.Add(at), basic)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("poll at +%v (basic %v) = %v, want %v", at, basic, got, want)
		}
		return auth
	}
	step(0, false, PollPending)                     // the first poll is never slowed
	step(4600*time.Millisecond, false, PollPending) // within the 500 ms slack
	step(5*time.Second, true, PollSlowDown)         // Basic: answered, clock not moved
	if auth := step(5*time.Second, false, PollSlowDown); auth.Interval != 10*time.Second {
		t.Fatalf("interval after slow_down = %v, want 10s", auth.Interval)
	}
	step(14600*time.Millisecond, true, PollPending)  // a Basic poll that errs does not move the clock...
	step(14700*time.Millisecond, false, PollPending) // ...so the retry without Basic is on time
	if out, _, _ := st.Poll(ctx, dc, "other", now.Add(30*time.Second), false); out != PollWrongClient {
		t.Fatalf("wrong client: %v", out)
	}

	sub := tokens.AccountSubject("8c1d4ba4-0c5e-4b3e-9b7e-1f0a4d8f3f11", "Ann@Example.com")
	if _, err := st.LookupPending(ctx, a.UserCode, now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Approve(ctx, a.UserCode, sub, now.Add(31*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Deny(ctx, a.UserCode, sub, now.Add(32*time.Second)); !errors.Is(err, ErrAlreadyResolved) {
		t.Fatalf("deny after approve: %v", err)
	}
	if _, err := st.LookupPending(ctx, a.UserCode, now); !errors.Is(err, ErrAlreadyResolved) {
		t.Fatalf("lookup after approve: %v", err)
	}
	got := step(33*time.Second, false, PollApproved)
	if got.Subject != sub || got.DeviceLabel != "laptop" || got.ClientID != "difyctl" || got.Claim.ID == "" {
		t.Fatalf("approved authorization %+v", got)
	}
	step(34*time.Second, false, PollPending) // the claim is live: wait
	if err := st.Complete(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := st.Complete(ctx, got); err != nil { // run twice: still done, once
		t.Fatalf("second completion: %v", err)
	}
	step(35*time.Second, false, PollExpired)
	if _, err := st.Lookup(ctx, a.UserCode, now); !errors.Is(err, ErrUnknownCode) {
		t.Fatalf("lookup after consume: %v", err)
	}
	// Left: the consumed marker (until the code would have expired) and the slot's epoch.
	if keys := rdb.Keys(ctx, "*").Val(); len(keys) != 2 {
		t.Fatalf("keys left after consume: %v", keys)
	}
}

func TestStateResolvedLivesAtLeastAMinute(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	st := NewState(rdb)
	now := time.Now()
	dc, a, err := st.Issue(ctx, Authorization{ClientID: "difyctl", DeviceLabel: "x", Interval: 5 * time.Second,
		CreatedAt: now, ExpiresAt: now.Add(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Deny(ctx, a.UserCode, tokens.ExternalSubject("e@x.io", "https://idp"), now); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{deviceKey(hashDeviceCode(dc)), userKey(a.UserCode)} {
		if ttl := rdb.PTTL(ctx, k).Val(); ttl < 59*time.Second {
			t.Fatalf("%s TTL %v after denial, want >= 60s", k, ttl)
		}
	}
	// Past the code's own expiry the denial still answers.
	if out, _, _ := st.Poll(ctx, dc, "difyctl", now.Add(20*time.Second), false); out != PollDenied {
		t.Fatalf("poll after denial = %v", out)
	}
}

func TestStateExpiredAndUnknown(t *testing.T) {
	ctx := context.Background()
	st := NewState(testenv.Redis(t))
	now := time.Now()
	dc, a := issueForTest(t, st, now)
	if out, _, _ := st.Poll(ctx, dc, "difyctl", now.Add(900*time.Second), false); out != PollExpired {
		t.Fatalf("poll at expiry = %v", out)
	}
	if _, err := st.Approve(ctx, a.UserCode, tokens.AccountSubject("a", "b"), now.Add(901*time.Second)); !errors.Is(err, ErrUnknownCode) {
		t.Fatalf("approve after expiry: %v", err)
	}
	// An unknown code: while the slot's epoch is younger than a code's lifetime it may have been lost with Redis's data;
	// after that it is just unknown.
	unknown := "dc_unknown"
	for epochKey(hashDeviceCode(unknown)) != epochKey(hashDeviceCode(dc)) {
		unknown += "x"
	}
	if out, _, _ := st.Poll(ctx, unknown, "difyctl", now, false); out != PollLost {
		t.Fatalf("unknown code in a young slot = %v", out)
	}
	if out, _, _ := st.Poll(ctx, unknown, "difyctl", now.Add(codeLifetime), false); out != PollExpired {
		t.Fatalf("unknown code = %v", out)
	}
	if _, err := st.LookupPending(ctx, "BBBB-BBBB", now); !errors.Is(err, ErrUnknownCode) {
		t.Fatalf("unknown user code: %v", err)
	}
}

func TestStateApproveDenyRaceHasOneWinner(t *testing.T) {
	ctx := context.Background()
	st := NewState(testenv.Redis(t))
	now := time.Now()
	for range 20 {
		_, a := issueForTest(t, st, now)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, resolve := range []func(context.Context, string, tokens.Subject, time.Time) (Authorization, error){st.Approve, st.Deny} {
			wg.Go(func() { _, errs[i] = resolve(ctx, a.UserCode, tokens.AccountSubject("a", "b"), now) })
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrAlreadyResolved):
				t.Fatal(err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d winners of approve vs deny", wins)
		}
	}
}

// TestStateClaimIsALeaseKeyedByItsID: a claimed approval makes other polls wait; only the claim's own completion consumes
// it; a released or lapsed claim lets the next poll claim it; a completion with no time left to be answered changes nothing.
func TestStateClaimIsALeaseKeyedByItsID(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t)
	st := NewState(rdb)
	now := time.Now()
	dc, a := issueForTest(t, st, now)
	if _, err := st.Approve(ctx, a.UserCode, tokens.AccountSubject("a", "a@example.com"), now); err != nil {
		t.Fatal(err)
	}
	poll := func(want PollOutcome) Authorization {
		t.Helper()
		out, got, err := st.Poll(ctx, dc, "difyctl", now, false)
		if err != nil || out != want {
			t.Fatalf("poll = %v (%v), want %v", out, err, want)
		}
		return got
	}
	first := poll(PollApproved)
	poll(PollPending)

	// Another poll's claim id completes nothing.
	forged := first
	forged.Claim.ID = "someone-else"
	if err := st.Complete(ctx, forged); !errors.Is(err, errClaimLost) {
		t.Fatalf("completion with a foreign claim: %v", err)
	}
	// No time left for the reply: refused before it reaches Redis.
	short, cancel := context.WithTimeout(ctx, replyMargin/2)
	defer cancel()
	if err := st.Complete(short, first); !errors.Is(err, errClaimLate) {
		t.Fatalf("completion without time for its reply: %v", err)
	}
	// Released: claimable at once; the old claim can no longer complete.
	if err := st.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := poll(PollApproved)
	if err := st.Complete(ctx, first); !errors.Is(err, errClaimLost) {
		t.Fatalf("completion of a released claim: %v", err)
	}
	// Lapsed: after the lease, the next poll claims it.
	var third Authorization
	testenv.Eventually(t, claimLease+5*time.Second, "the claim to lapse", func() bool {
		out, got, err := st.Poll(ctx, dc, "difyctl", now, false)
		if err != nil || (out != PollApproved && out != PollPending) {
			t.Fatalf("poll while waiting for the lease = %v (%v)", out, err)
		}
		third = got
		return out == PollApproved
	})
	if err := st.Complete(ctx, second); !errors.Is(err, errClaimLost) {
		t.Fatalf("completion of a lapsed claim taken over: %v", err)
	}
	if err := st.Complete(ctx, third); err != nil {
		t.Fatal(err)
	}
	poll(PollExpired)
}
