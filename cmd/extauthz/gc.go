package main

import (
	"runtime/debug"
	"strconv"
	"strings"
)

// gcPercent is extauthz's GOGC when none is set. A Check allocates a few kilobytes that are garbage once it is answered,
// while the live heap (the caches) is small, so with Go's default of 100 the collector runs several times a second under
// load and its mark work was about a twentieth of a Check's CPU; at 400 it runs a quarter as often. The memory limit below
// keeps the larger headroom from growing into the container's limit.
const gcPercent = 400

// memoryLimitShare is the part of the container's memory limit given to the Go runtime as its soft limit (GOMEMLIMIT)
// when none is set: the rest is for what the runtime does not count (stacks of the OS, the binary, page cache of logs).
const memoryLimitShare = 0.8

// cgroupMemoryLimitFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupMemoryLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// tuneGC applies extauthz's garbage-collector defaults where the environment sets none: GOGC 400, and a soft memory limit
// of 80% of the container's memory limit, if it has one. GOGC and GOMEMLIMIT, when set, are the Go runtime's own and win.
func tuneGC(lookup func(string) (string, bool), readFile func(string) ([]byte, error)) (percent int, limit int64) {
	percent, limit = -1, -1
	if _, set := lookup("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
		percent = gcPercent
	}
	if _, set := lookup("GOMEMLIMIT"); !set {
		if max, ok := containerMemoryLimit(readFile); ok {
			limit = int64(float64(max) * memoryLimitShare)
			debug.SetMemoryLimit(limit)
		}
	}
	return percent, limit
}

// containerMemoryLimit reads the cgroup's memory limit in bytes; false when there is none ("max", or v1's "unlimited" value
// near 2^63) or no cgroup file can be read.
func containerMemoryLimit(readFile func(string) ([]byte, error)) (int64, bool) {
	for _, name := range cgroupMemoryLimitFiles {
		b, err := readFile(name)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v <= 0 || v >= 1<<62 {
			return 0, false
		}
		return v, true
	}
	return 0, false
}
