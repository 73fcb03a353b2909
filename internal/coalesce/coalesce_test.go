package coalesce

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

// gate is a round trip that records each batch and, for the first one, waits until released.
type gate struct {
	mu      sync.Mutex
	batches [][]int
	ctxs    []context.Context
	entered chan struct{}
	release chan struct{}
	skip    int // a request left unanswered (0: none)
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 16), release: make(chan struct{})} }

func (g *gate) roundTrip(ctx context.Context, calls []*Call[int, int]) {
	g.mu.Lock()
	first := len(g.batches) == 0
	reqs := make([]int, len(calls))
	for i, c := range calls {
		reqs[i] = c.Req
	}
	g.batches = append(g.batches, reqs)
	g.ctxs = append(g.ctxs, ctx)
	g.mu.Unlock()
	g.entered <- struct{}{}
	if first {
		<-g.release
	}
	for _, c := range calls {
		if c.Req != g.skip {
			c.Answer(c.Req*10, nil)
		}
	}
}

// Calls that arrive while a round trip is in flight go out together in the next one, each answered with its own reply.
func TestCallsWaitingForARoundTripGoOutTogether(t *testing.T) {
	g := newGate()
	b := New(g.roundTrip, Options{})
	ctx := context.Background()
	var wg sync.WaitGroup
	answers := make([]int, 11)
	errs := make([]error, 11)
	wg.Go(func() { answers[0], errs[0] = b.Do(ctx, 1) })
	<-g.entered // the first round trip is in flight
	for i := 1; i <= 10; i++ {
		wg.Go(func() { answers[i], errs[i] = b.Do(ctx, i+1) })
	}
	testenv.Eventually(t, 5*time.Second, "ten calls queued", func() bool { return b.Waiting() == 10 })
	close(g.release)
	wg.Wait()
	for i := range answers {
		if errs[i] != nil || answers[i] != (i+1)*10 {
			t.Fatalf("call %d: %d, %v; want %d", i, answers[i], errs[i], (i+1)*10)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.batches) != 2 || len(g.batches[0]) != 1 || len(g.batches[1]) != 10 {
		t.Fatalf("batches %v; want the first call alone, then the ten together", g.batches)
	}
}

// A caller that gives up before its round trip is sent is left out of it; the others are sent and answered.
func TestAGoneCallerIsNotSent(t *testing.T) {
	g := newGate()
	b := New(g.roundTrip, Options{})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = b.Do(ctx, 1) })
	<-g.entered
	gone, cancel := context.WithCancel(ctx)
	var goneErr, keptErr error
	var kept int
	wg.Go(func() { _, goneErr = b.Do(gone, 2) })
	wg.Go(func() { kept, keptErr = b.Do(ctx, 3) })
	testenv.Eventually(t, 5*time.Second, "two calls queued", func() bool { return b.Waiting() == 2 })
	cancel()
	close(g.release)
	wg.Wait()
	if !errors.Is(goneErr, context.Canceled) || keptErr != nil || kept != 30 {
		t.Fatalf("gone caller: %v; kept caller: %d, %v", goneErr, kept, keptErr)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.batches) != 2 || len(g.batches[1]) != 1 || g.batches[1][0] != 3 {
		t.Fatalf("batches %v; want the cancelled call left out of the second", g.batches)
	}
}

// A hung round trip costs each caller at most its call timeout; the batch's context outlives a caller that gave up,
// and lasts until the most patient caller's deadline.
func TestCallTimeoutAndTheBatchContext(t *testing.T) {
	g := newGate()
	b := New(g.roundTrip, Options{CallTimeout: 50 * time.Millisecond})
	_, err := b.Do(context.Background(), 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call in a hung round trip: %v, want DeadlineExceeded", err)
	}
	g.mu.Lock()
	ctx := g.ctxs[0]
	g.mu.Unlock()
	dl, ok := ctx.Deadline()
	if !ok || dl.After(time.Now().Add(time.Second)) {
		t.Fatalf("the round trip's deadline %v (%v); want the caller's call timeout", dl, ok)
	}
	close(g.release)
	testenv.Eventually(t, 5*time.Second, "the round trip's context done past the deadline", func() bool {
		return ctx.Err() != nil
	})
}

// A round trip that leaves a call unanswered fails that call instead of leaving its caller waiting.
func TestAnUnansweredCallFails(t *testing.T) {
	g := newGate()
	close(g.release)
	g.skip = 1
	b := New(g.roundTrip, Options{})
	if _, err := b.Do(context.Background(), 1); !errors.Is(err, ErrNotAnswered) {
		t.Fatalf("unanswered call: %v, want ErrNotAnswered", err)
	}
	if v, err := b.Do(context.Background(), 2); err != nil || v != 20 {
		t.Fatalf("next call: %d, %v", v, err)
	}
}

// A round trip that panics fails its own calls with an error; the Batcher goes on sending the next ones.
func TestAPanickingRoundTripFailsItsCallsOnly(t *testing.T) {
	b := New(func(_ context.Context, calls []*Call[int, int]) {
		for _, c := range calls {
			if c.Req < 0 {
				panic("negative")
			}
			c.Answer(c.Req*10, nil)
		}
	}, Options{})
	if _, err := b.Do(context.Background(), -1); err == nil || !strings.Contains(err.Error(), "panicked: negative") {
		t.Fatalf("call in a panicking round trip: %v, want the panic as an error", err)
	}
	if v, err := b.Do(context.Background(), 2); err != nil || v != 20 {
		t.Fatalf("next call: %d, %v", v, err)
	}
}

// A sender with nothing to send stays, waiting, and the next call wakes it instead of starting another goroutine.
func TestAnIdleSenderIsWokenNotStarted(t *testing.T) {
	b := New(func(_ context.Context, calls []*Call[int, int]) {
		for _, c := range calls {
			c.Answer(c.Req, nil)
		}
	}, Options{})
	counts := func() (senders, idle int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.senders, b.idle
	}
	for i := range 5 {
		if v, err := b.Do(context.Background(), i); err != nil || v != i {
			t.Fatalf("call %d: %d, %v", i, v, err)
		}
		testenv.Eventually(t, 5*time.Second, "the sender idle", func() bool {
			s, idle := counts()
			return s == 1 && idle == 1
		})
	}
}

// A sender whose round trip returns with calls waiting yields while that brings new calls, so callers that were about to
// call join the next round trip; it stops at the first yield that brings none, after maxYields however many keep coming,
// and at once when the batch is full. A lone call on an idle or new sender goes out without a yield.
func TestTheSenderYieldsWhileCallersJoin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxBatch   int
		joining    int // calls that arrive during the sender's yields, one per yield
		wantYields int
		wantSecond int // calls in the second round trip
	}{
		{"two join, then none", 0, 2, 3, 3},
		{"callers keep coming", 0, 100, maxYields, 1 + maxYields},
		{"the batch is already full", 1, 2, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate()
			b := New(g.roundTrip, Options{MaxBatch: tc.maxBatch, MaxSenders: 1})
			ctx := context.Background()
			var wg sync.WaitGroup
			var yields atomic.Int32
			b.yield = func() { // runs on the sender, with the queue unlocked: a caller arrives during the yield
				n := int(yields.Add(1))
				if n > tc.joining {
					return
				}
				before := b.Waiting()
				wg.Go(func() { _, _ = b.Do(ctx, 100+n) })
				// not testenv.Eventually: this is the sender's goroutine, not the test's; a call that never queues fails below
				for deadline := time.Now().Add(5 * time.Second); b.Waiting() == before && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
			}
			wg.Go(func() { _, _ = b.Do(ctx, 1) })
			<-g.entered // the first round trip is in flight: the sender was new, so it did not yield
			if n := yields.Load(); n != 0 {
				t.Fatalf("a new sender yielded %d times before a lone call", n)
			}
			wg.Go(func() { _, _ = b.Do(ctx, 2) })
			testenv.Eventually(t, 5*time.Second, "a call waiting behind the round trip", func() bool { return b.Waiting() == 1 })
			close(g.release)
			<-g.entered // the second round trip, after the yields
			wg.Wait()
			g.mu.Lock()
			defer g.mu.Unlock()
			if n := int(yields.Load()); n != tc.wantYields || len(g.batches) < 2 || len(g.batches[1]) != tc.wantSecond {
				t.Fatalf("yields %d, batches %v; want %d yields and %d calls in the second round trip",
					n, g.batches, tc.wantYields, tc.wantSecond)
			}
		})
	}
}

// A rider (DoWithin) starts no round trip while its wait lasts, even with an idle sender there: it goes out with the next
// call made with Do, in the same round trip; riders queued with a full batch go out at once.
func TestARiderGoesOutWithTheNextCall(t *testing.T) {
	var mu sync.Mutex
	var batches [][]int
	b := New(func(_ context.Context, calls []*Call[int, int]) {
		reqs := make([]int, len(calls))
		for i, c := range calls {
			reqs[i] = c.Req
			c.Answer(c.Req*10, nil)
		}
		mu.Lock()
		batches = append(batches, reqs)
		mu.Unlock()
	}, Options{MaxBatch: 3})
	ctx := context.Background()
	if _, err := b.Do(ctx, 1); err != nil { // leaves an idle sender behind
		t.Fatal(err)
	}
	rider := make(chan int, 1)
	go func() {
		v, _ := b.DoWithin(ctx, 2, time.Hour)
		rider <- v
	}()
	testenv.Eventually(t, 5*time.Second, "the rider queued", func() bool { return b.Waiting() == 1 })
	if v, err := b.Do(ctx, 3); err != nil || v != 30 {
		t.Fatalf("eager call: %d, %v", v, err)
	}
	if v := <-rider; v != 20 {
		t.Fatalf("rider answered %d, want 20", v)
	}
	// A full batch of riders does not wait.
	var wg sync.WaitGroup
	for i := 4; i <= 6; i++ {
		wg.Go(func() {
			if v, err := b.DoWithin(ctx, i, time.Hour); err != nil || v != i*10 {
				t.Errorf("rider %d: %d, %v", i, v, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(batches) != 3 || len(batches[1]) != 2 || batches[1][0] != 2 || batches[1][1] != 3 || len(batches[2]) != 3 {
		t.Fatalf("round trips %v, want [1] [2 3] and the three riders together", batches)
	}
}

// A rider no call comes for goes out on its own once its wait has passed, and so do riders queued meanwhile.
func TestARiderGoesOutAloneAfterItsWait(t *testing.T) {
	var trips atomic.Int32
	b := New(func(_ context.Context, calls []*Call[int, int]) {
		trips.Add(1)
		for _, c := range calls {
			c.Answer(c.Req*10, nil)
		}
	}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for round := range 2 { // the second round re-arms the timer the first one fired
		var wg sync.WaitGroup
		for i := 1; i <= 3; i++ {
			wg.Go(func() {
				if v, err := b.DoWithin(ctx, i, 20*time.Millisecond); err != nil || v != i*10 {
					t.Errorf("round %d, rider %d: %d, %v", round, i, v, err)
				}
			})
		}
		wg.Wait()
	}
	if n := trips.Load(); n < 2 || n > 6 {
		t.Fatalf("%d round trips for two rounds of riders", n)
	}
}

// A rider queued behind a full batch, with every sender busy, goes out in the round trip after that batch, not at the end
// of its wait: the sender takes what was left behind next.
func TestARiderLeftBehindAFullBatchGoesNext(t *testing.T) {
	g := newGate()
	b := New(g.roundTrip, Options{MaxBatch: 2, MaxSenders: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = b.Do(ctx, 1) })
	<-g.entered // the only sender is busy with 1
	for i := 2; i <= 3; i++ {
		wg.Go(func() { _, _ = b.Do(ctx, i) })
		testenv.Eventually(t, 5*time.Second, "the call queued", func() bool { return b.Waiting() == i-1 })
	}
	rider := make(chan error, 1)
	go func() {
		v, err := b.DoWithin(ctx, 4, time.Hour)
		if err == nil && v != 40 {
			err = errors.New("wrong answer")
		}
		rider <- err
	}()
	testenv.Eventually(t, 5*time.Second, "the rider queued", func() bool { return b.Waiting() == 3 })
	close(g.release)
	if err := <-rider; err != nil {
		t.Fatalf("rider behind a full batch: %v", err)
	}
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.batches) != 3 || len(g.batches[1]) != 2 || len(g.batches[2]) != 1 || g.batches[2][0] != 4 {
		t.Fatalf("round trips %v, want [1] [2 3] [4]", g.batches)
	}
}

// A rider whose wait ends before that of the riders queued ahead of it brings their round trip forward.
func TestTheEarliestRiderWaitCounts(t *testing.T) {
	b := New(func(_ context.Context, calls []*Call[int, int]) {
		for _, c := range calls {
			c.Answer(c.Req*10, nil)
		}
	}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	patient := make(chan error, 1)
	go func() {
		_, err := b.DoWithin(ctx, 1, time.Hour)
		patient <- err
	}()
	testenv.Eventually(t, 5*time.Second, "the patient rider queued", func() bool { return b.Waiting() == 1 })
	if v, err := b.DoWithin(ctx, 2, 10*time.Millisecond); err != nil || v != 20 {
		t.Fatalf("hurried rider: %d, %v", v, err)
	}
	if err := <-patient; err != nil {
		t.Fatalf("patient rider: %v", err)
	}
}
