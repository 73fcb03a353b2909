package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestThrottleWritesOneLinePerKindPerInterval(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	th := NewThrottle(10 * time.Second)
	now := time.Unix(1000, 0)
	th.now = func() time.Time { return now }
	ctx := context.Background()
	for range 1000 {
		th.Log(ctx, logger, slog.LevelWarn, "redis", "redis down")
	}
	th.Log(ctx, logger, slog.LevelWarn, "postgres", "postgres down")
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Fatalf("%d lines for 1000 events of one kind and one of another, want 2:\n%s", got, buf.String())
	}
	now = now.Add(11 * time.Second)
	th.Log(ctx, logger, slog.LevelWarn, "redis", "redis down")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], `"suppressed":999`) {
		t.Fatalf("after the interval want a third line with suppressed=999, got:\n%s", buf.String())
	}
}
