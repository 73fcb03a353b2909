package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// fatalRecorder stands in for a test that fails: it keeps the message and stops the goroutine as t.Fatalf does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Test logs end up in CI logs: a bad TEST_REDIS_URL must not print its password there.
func TestBadRedisURLKeepsPasswordOut(t *testing.T) {
	const password = "s3cret-pw"
	t.Setenv("TEST_REDIS_URL", "redis://:"+password+"@redis:badport/0")
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		RedisURL(f)
	}()
	<-done
	if f.msg == "" || strings.Contains(f.msg, password) {
		t.Fatalf("RedisURL with a bad URL: failure %q; want one that does not show the password", f.msg)
	}
}
