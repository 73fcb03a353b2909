package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func TestSuspectLaneAdmitsItsRateAndBurst(t *testing.T) {
	c := newClock()
	l := newSuspectLane(20, c.now)
	admitted := 0
	for range 100 {
		if l.take() {
			admitted++
		}
	}
	if admitted != 20 {
		t.Fatalf("a burst admitted %d, want the lane's one second's worth (20)", admitted)
	}
	c.advance(100 * time.Millisecond)
	admitted = 0
	for range 100 {
		if l.take() {
			admitted++
		}
	}
	if admitted != 2 {
		t.Fatalf("100 ms later %d admitted, want 2", admitted)
	}
	c.advance(time.Hour) // an idle lane holds no more than its burst
	admitted = 0
	for range 100 {
		if l.take() {
			admitted++
		}
	}
	if admitted != 20 {
		t.Fatalf("after an idle hour %d admitted, want 20", admitted)
	}
}

func TestLocalBudgetHoldsSlotsForLookupsInFlight(t *testing.T) {
	c := newClock()
	b := newLocalBudget(3, time.Minute, c.now)
	var holds []budgetHold
	for i := range 3 {
		h, ok := b.reserve("a")
		if !ok {
			t.Fatalf("slot %d refused within the budget", i+1)
		}
		if h.first != (i == 0) {
			t.Fatalf("slot %d: first = %v; only the slot of an address with nothing counted is first", i+1, h.first)
		}
		holds = append(holds, h)
	}
	if _, ok := b.reserve("a"); ok {
		t.Fatal("a fourth lookup in flight was given a slot of a budget of 3")
	}
	if _, ok := b.reserve("b"); !ok {
		t.Fatal("another address shares the first one's budget")
	}
	// A lookup that found a valid token gives its slot back; one that did not keeps it as the charge.
	b.release(holds[0])
	if _, ok := b.reserve("a"); !ok {
		t.Fatal("a released slot was not given out again")
	}
	if n := b.counted("a"); n != 3 {
		t.Fatalf("%d counted after three charges, want 3", n)
	}
	// Invalid outcomes through the suspect lane keep the address over.
	b.add("a")
	c.advance(time.Minute)
	if n := b.counted("a"); n != 0 {
		t.Fatalf("%d counted a window later, want 0", n)
	}
	if h, _ := b.reserve("a"); !h.first {
		t.Fatal("the first slot of a new window is not first")
	}
	// A slot held across the window's end is not returned to the new window.
	h, _ := b.reserve("c")
	c.advance(time.Minute)
	b.reserve("c")
	b.release(h)
	if w, _ := b.windows.Peek("c"); w.n != 1 {
		t.Fatalf("new window counts %d after releasing an old slot, want 1", w.n)
	}
}

func TestSharedLookups(t *testing.T) {
	var g flightGroup[int]

	t.Run("a panicking lookup is an error, not a crash", func(t *testing.T) {
		_, err := g.do(context.Background(), "p", func(context.Context) (int, error) { panic("boom") })
		if !errors.Is(err, errLookupPanicked) {
			t.Fatalf("err = %v, want errLookupPanicked", err)
		}
		// The key is free again: the next lookup runs.
		if v, err := g.do(context.Background(), "p", func(context.Context) (int, error) { return 1, nil }); v != 1 || err != nil {
			t.Fatalf("after a panic: %v, %v", v, err)
		}
	})

	t.Run("concurrent callers share one lookup and each waits no longer than its own context", func(t *testing.T) {
		started, release := make(chan context.Context, 1), make(chan struct{})
		leaderCtx, cancelLeader := context.WithTimeout(context.Background(), time.Hour)
		defer cancelLeader()
		calls := 0
		leader := make(chan int, 1)
		go func() {
			v, _ := g.do(leaderCtx, "k", func(ctx context.Context) (int, error) {
				calls++
				started <- ctx
				<-release
				return 7, nil
			})
			leader <- v
		}()
		lookupCtx := <-started
		// A follower that gives up returns at once.
		impatient, cancelImpatient := context.WithCancel(context.Background())
		cancelImpatient()
		if _, err := g.do(impatient, "k", func(context.Context) (int, error) { return 0, errors.New("ran twice") }); !errors.Is(err, context.Canceled) {
			t.Fatalf("impatient follower: %v, want its own cancellation", err)
		}
		// A patient follower gets the leader's answer, and the leader's cancellation does not end the lookup.
		follower := make(chan int, 1)
		go func() {
			v, _ := g.do(context.Background(), "k", func(context.Context) (int, error) { return 0, errors.New("ran twice") })
			follower <- v
		}()
		testenv.Eventually(t, 5*time.Second, "the follower to join the lookup", func() bool { return g.waitersForTest("k") == 2 })
		cancelLeader()
		if err := lookupCtx.Err(); err != nil {
			t.Fatalf("the shared lookup's context ended with its first caller: %v", err)
		}
		if dl, ok := lookupCtx.Deadline(); !ok || time.Until(dl) < 59*time.Minute {
			t.Fatalf("the shared lookup's deadline %v (%v), want the first caller's", dl, ok)
		}
		close(release)
		if v := <-leader; v != 7 {
			t.Fatalf("leader got %d", v)
		}
		if v := <-follower; v != 7 || calls != 1 {
			t.Fatalf("follower got %d after %d lookups, want 7 after 1", v, calls)
		}
	})
}

// waitersForTest is how many callers joined the call running for key.
func (g *flightGroup[T]) waitersForTest(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c.waiters
	}
	return 0
}
