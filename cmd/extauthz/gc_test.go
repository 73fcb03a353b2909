package main

import (
	"errors"
	"io/fs"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	restorePercent := debug.SetGCPercent(100)
	restoreLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(restorePercent)
		debug.SetMemoryLimit(restoreLimit)
	})
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if v, ok := m[name]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	cases := []struct {
		name        string
		env, files  map[string]string
		wantPercent int
		wantLimit   int64
	}{
		{"cgroup v2 limit", nil, map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}, 400, 214748364},
		{"cgroup v2 unlimited", nil, map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 400, -1},
		{"cgroup v1 limit", nil, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912"}, 400, 429496729},
		{"cgroup v1 unlimited", nil, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712"}, 400, -1},
		{"no cgroup", nil, nil, 400, -1},
		{"operator's GOGC and GOMEMLIMIT win", map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"},
			map[string]string{"/sys/fs/cgroup/memory.max": "268435456"}, -1, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(1 << 40)
			percent, limit := tuneGC(env(c.env), files(c.files))
			if percent != c.wantPercent || limit != c.wantLimit {
				t.Fatalf("tuneGC = %d, %d; want %d, %d", percent, limit, c.wantPercent, c.wantLimit)
			}
			wantRuntimePercent := 100
			if c.wantPercent > 0 {
				wantRuntimePercent = c.wantPercent
			}
			if got := debug.SetGCPercent(100); got != wantRuntimePercent {
				t.Errorf("runtime GC percent %d, want %d", got, wantRuntimePercent)
			}
			wantRuntimeLimit := int64(1 << 40)
			if c.wantLimit > 0 {
				wantRuntimeLimit = c.wantLimit
			}
			if got := debug.SetMemoryLimit(-1); got != wantRuntimeLimit {
				t.Errorf("runtime memory limit %d, want %d", got, wantRuntimeLimit)
			}
		})
	}
	if _, ok := containerMemoryLimit(func(string) ([]byte, error) { return nil, errors.New("permission denied") }); ok {
		t.Error("an unreadable cgroup file gave a limit")
	}
}
