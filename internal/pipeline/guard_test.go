package pipeline

import (
	"testing"
	"time"
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
