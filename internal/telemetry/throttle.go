package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Throttle keeps a dependency outage from flooding the log: for each kind it writes the first line at once and then at most
// one line per interval, carrying how many lines it held back since the last one. Metrics still count every event.
type Throttle struct {
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	kinds map[string]*throttleState
}

type throttleState struct {
	last       time.Time
	suppressed int
}

// NewThrottle returns a throttle that writes at most one line per kind per interval (default 10 s).
func NewThrottle(interval time.Duration) *Throttle {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return &Throttle{interval: interval, now: time.Now, kinds: map[string]*throttleState{}}
}

// Log writes msg at level under kind unless a line of that kind was written within the interval; the line it writes carries
// "suppressed" (lines held back since the previous one) when that is not zero.
func (t *Throttle) Log(ctx context.Context, logger *slog.Logger, level slog.Level, kind, msg string, args ...any) {
	if t == nil {
		logger.Log(ctx, level, msg, args...)
		return
	}
	now := t.now()
	t.mu.Lock()
	st := t.kinds[kind]
	if st == nil {
		st = &throttleState{}
		t.kinds[kind] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < t.interval {
		st.suppressed++
		t.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	t.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	logger.Log(ctx, level, msg, args...)
}
