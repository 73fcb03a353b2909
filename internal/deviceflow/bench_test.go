package deviceflow

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/memory"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// benchParallelism goroutines per CPU: a server has many requests in flight, each mostly waiting on Redis.
const benchParallelism = 8

// The benchmarks measure the Redis-bound paths (polls and lookups never touch Postgres until a token is minted), so the
// token store is the in-memory one and Redis is real.
func newBenchServer(b *testing.B) *Server {
	b.Helper()
	rdb := testenv.Redis(b)
	store := memory.New()
	srv, err := New(Deps{
		Tokens: store, Directory: store, Redis: rdb, Limiter: ratelimit.NewSlidingWindow(rdb),
		Revoker: tokencache.NewRevoker(rdb, time.Minute), Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}, Config{SecretKey: "bench", ConsoleWebURL: "http://c", ConsoleAPIURL: "http://a", KnownClientIDs: []string{"difyctl"},
		TTL: tokens.TTLPolicy{Days: 14}})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// issueN creates n pending authorizations straight in the state.
func issueN(b *testing.B, st *State, n int) (deviceCodes, userCodes []string) {
	b.Helper()
	now := time.Now()
	for range n {
		dc, a, err := st.Issue(context.Background(), Authorization{ClientID: "difyctl", DeviceLabel: "bench", CreatorIP: "10.0.0.1",
			Interval: 5 * time.Second, CreatedAt: now, ExpiresAt: now.Add(codeLifetime)})
		if err != nil {
			b.Fatal(err)
		}
		deviceCodes, userCodes = append(deviceCodes, dc), append(userCodes, a.UserCode)
	}
	return deviceCodes, userCodes
}

// BenchmarkPollPending is the steady state of the endpoint: CLIs polling codes nobody approved yet, through the whole
// handler (form decoding, the poll script, the JSON error).
func BenchmarkPollPending(b *testing.B) {
	srv := newBenchServer(b)
	dcs, _ := issueN(b, srv.State(), 1000)
	h := srv.Handler()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			dc := dcs[next.Add(1)%int64(len(dcs))]
			body := url.Values{"grant_type": {deviceCodeGrant}, "client_id": {"difyctl"}, "device_code": {dc}}.Encode()
			req := httptest.NewRequest(http.MethodPost, apiPrefix+"/oauth/device/token", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusBadRequest {
				b.Fatalf("poll answered %d", rec.Code)
			}
		}
	})
}

// BenchmarkPollConsume is the poll that wins an approval: the consume script (check, delete both keys, return the
// subject), without the Postgres mint.
func BenchmarkPollConsume(b *testing.B) {
	srv := newBenchServer(b)
	st := srv.State()
	dcs, ucs := issueN(b, st, b.N)
	sub := tokens.AccountSubject("0a000000-0000-4000-8000-0000000000a1", "bench@example.com")
	now := time.Now()
	for _, uc := range ucs {
		if _, err := st.Approve(context.Background(), uc, sub, now); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			out, _, err := st.Poll(context.Background(), dcs[next.Add(1)-1], "difyctl", now, false)
			if err != nil || out != PollApproved {
				b.Fatalf("consume: %v %v", out, err)
			}
		}
	})
}

// BenchmarkLookup is GET /oauth/device/lookup for a pending code through the whole handler, including both per-IP limits
// (each request from its own address, so the limits count but never refuse).
func BenchmarkLookup(b *testing.B) {
	srv := newBenchServer(b)
	_, ucs := issueN(b, srv.State(), 1000)
	h := srv.Handler()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			req := httptest.NewRequest(http.MethodGet, apiPrefix+"/oauth/device/lookup?user_code="+ucs[i%int64(len(ucs))], nil)
			req.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:1234", byte(i>>16), byte(i>>8), byte(i))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"valid":true`) {
				b.Fatalf("lookup answered %d %s", rec.Code, rec.Body.String())
			}
		}
	})
}
