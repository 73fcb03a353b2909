package main

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// startRedis runs an in-process Redis. miniredis answers TIME (the limiter's clock) from the wall clock, but its key
// expiry only moves when told; keepExpiring advances it by the real time that passed, every second, so rate-limit
// windows, device codes and tombstones expire as they would on a real Redis (up to a second late).
func startRedis(ctx context.Context) (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("in-process redis: %w", err)
	}
	go keepExpiring(ctx, m, time.Second)
	return m, nil
}

func keepExpiring(ctx context.Context, m *miniredis.Miniredis, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.FastForward(now.Sub(last))
			last = now
		}
	}
}
