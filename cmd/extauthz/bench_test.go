package main

import (
	"context"
	"testing"
)

// BenchmarkWarmCheck measures Checks on warm caches over a real gRPC connection (go test -bench WarmCheck ./cmd/extauthz).
func BenchmarkWarmCheck(b *testing.B) {
	w := newWorld(b)
	srv := w.start(map[string]string{"OPENAPI_RATE_LIMIT_PER_TOKEN": "1000000", "CHECK_TIMEOUT": "1s"})
	ada, _ := w.accountToken(accountActive, "ada@example.com")
	req := checkRequest("POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada))
	ctx := context.Background()
	for range 3 {
		if resp, err := srv.client.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("warm-up: %v %v", resp, err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if resp, err := srv.client.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
				b.Errorf("check: %v %v", resp, err)
				return
			}
		}
	})
}
