package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// prepare connects to both servers and sends every request of the mix once to each. Against extauthz this pass fills every
// cache (token entries, membership verdicts, apps) and checks each answer in full: an allow carrying the identity, the
// verified tenant and the resolved app where the route has those steps, and the limiter's headers, which prove the limiter
// counted. Only then are figures worth taking.
func (b *bench) prepare(ctx context.Context) error {
	var err error
	if b.nullConns, err = dial(b.servers.null.addr, b.opts.conns); err != nil {
		return err
	}
	if b.extConns, err = dial(b.servers.ext.addr, b.opts.conns); err != nil {
		return err
	}
	null, ext := b.targets()
	t := time.Now()
	if err := b.verifyAll(ctx, ext, verifyExtauthz); err != nil {
		return err
	}
	fmt.Printf("verified: all %d requests of the mix allowed by extauthz with identity, tenant, app and RateLimit headers (%s, caches now hot)\n",
		len(b.reqs), time.Since(t).Round(time.Millisecond))
	return b.verifyAll(ctx, null, func(*request, *authv3.CheckResponse) error { return nil })
}

func (b *bench) verifyAll(ctx context.Context, t target, verify func(*request, *authv3.CheckResponse) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	// Few workers: this pass runs on cold caches (Postgres lookups, cache fills) and must not overload a shared machine.
	workers := min(b.opts.concurrency, 4)
	for i := range workers {
		conn := t.conns[i%len(t.conns)]
		wg.Go(func() {
			for j := i; j < len(b.reqs); j += workers {
				req := &b.reqs[j]
				res, err := checkWithRetry(ctx, conn, req)
				if err == nil {
					var resp authv3.CheckResponse
					if err = proto.Unmarshal(res.raw, &resp); err == nil {
						if !res.allowed {
							err = fmt.Errorf("denied: %s", describeDeny(res.raw))
						} else {
							err = verify(req, &resp)
						}
					}
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, req.route+": "+err.Error())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		slices.Sort(failures)
		shown := failures[:min(len(failures), 10)]
		return &insaneError{fmt.Sprintf("%s: %d of %d requests were not a correct allow; the setup is wrong. First ones:\n  %s",
			t.name, len(failures), len(b.reqs), joinLines(shown))}
	}
	return t.proc.alive()
}

// unavailableAttempts: a 503 on this cold pass can be the machine being busy (a Check past its deadline); it is what a
// client retries, so it is retried here too. Any other deny is final, and in measured rounds a 503 is never forgiven.
const unavailableAttempts = 3

func checkWithRetry(ctx context.Context, conn *grpc.ClientConn, req *request) (checkResult, error) {
	for attempt := 1; ; attempt++ {
		res := checkResult{keepRaw: true}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := conn.Invoke(cctx, checkMethod, req, &res)
		cancel()
		if err != nil || res.allowed || attempt == unavailableAttempts || !isUnavailable(res.raw) {
			return res, err
		}
	}
}

func isUnavailable(raw []byte) bool {
	var resp authv3.CheckResponse
	return proto.Unmarshal(raw, &resp) == nil && resp.GetDeniedResponse().GetStatus().GetCode() == 503
}

// verifyExtauthz checks one allow in full.
func verifyExtauthz(req *request, resp *authv3.CheckResponse) error {
	ok := resp.GetOkResponse()
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	want := []string{"x-authgate-subject-type", "x-authgate-token-id", "x-authgate-client-id", "x-authgate-scopes"}
	if req.wantTenant {
		want = append(want, "x-authgate-tenant-id")
	}
	if req.wantApp {
		want = append(want, "x-authgate-app-id")
	}
	for _, name := range want {
		if set[name] == "" {
			return fmt.Errorf("allow without %s", name)
		}
	}
	added := map[string]string{}
	for _, h := range ok.GetResponseHeadersToAdd() {
		added[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	remaining, err := strconv.Atoi(added["ratelimit-remaining"])
	if added["ratelimit-limit"] != benchRateLimit || err != nil || strconv.Itoa(remaining) == benchRateLimit {
		return fmt.Errorf("allow without the limiter's count (ratelimit-limit %q, ratelimit-remaining %q)",
			added["ratelimit-limit"], added["ratelimit-remaining"])
	}
	return nil
}

// describeDeny renders a deny for the report: the rpc code, the HTTP status and the JSON body.
func describeDeny(raw []byte) string {
	var resp authv3.CheckResponse
	if err := proto.Unmarshal(raw, &resp); err != nil {
		return "undecodable response: " + err.Error()
	}
	if d := resp.GetDeniedResponse(); d != nil {
		return fmt.Sprintf("rpc %d, HTTP %d %s", resp.GetStatus().GetCode(), d.GetStatus().GetCode(), d.GetBody())
	}
	return fmt.Sprintf("rpc %d without a denied_response", resp.GetStatus().GetCode())
}
