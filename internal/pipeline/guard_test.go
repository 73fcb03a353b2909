package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sync/singleflight"
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
	if !b.exceededForTest("a") {
		t.Fatal("budget not spent after three charges")
	}
	// Invalid outcomes through the suspect lane keep the address over.
	b.add("a")
	c.advance(time.Minute)
	if b.exceededForTest("a") {
		t.Fatal("budget still spent a window later")
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

// exceededForTest is whether reserve would refuse key a slot, without taking one.
func (b *localBudget) exceededForTest(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current(key, b.now()).n >= b.limit
}

func TestSharedLookups(t *testing.T) {
	var g singleflight.Group

	t.Run("a panicking lookup is an error, not a crash", func(t *testing.T) {
		_, err := shared(context.Background(), &g, "p", func(context.Context) (int, error) { panic("boom") })
		if !errors.Is(err, errLookupPanicked) {
			t.Fatalf("err = %v, want errLookupPanicked", err)
		}
	})

	t.Run("the first caller going away does not cancel the lookup others may share", func(t *testing.T) {
		started, release := make(chan context.Context, 1), make(chan struct{})
		leaderCtx, cancelLeader := context.WithTimeout(context.Background(), time.Hour)
		leaderErr := make(chan error, 1)
		go func() {
			_, err := shared(leaderCtx, &g, "k", func(ctx context.Context) (int, error) {
				started <- ctx
				<-release
				return 7, nil
			})
			leaderErr <- err
		}()
		lookupCtx := <-started
		cancelLeader()
		if err := <-leaderErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("leader: %v, want its own cancellation at once", err)
		}
		if err := lookupCtx.Err(); err != nil {
			t.Fatalf("the shared lookup's context ended with its first caller: %v", err)
		}
		if dl, ok := lookupCtx.Deadline(); !ok || time.Until(dl) < 59*time.Minute {
			t.Fatalf("the shared lookup's deadline %v (%v), want the first caller's", dl, ok)
		}
		close(release)
	})
}
