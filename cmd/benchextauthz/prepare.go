package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// warm sends every request once to t, with a few workers. Against a fresh extauthz this pass fills every cache (token
// entries, membership verdicts, apps) and checks each answer in full (verify): an allow carrying the identity, the verified
// tenant and the resolved app where the route has those steps, and the limiter's headers, which prove the limiter counted.
// Only then are figures of a warm workload worth taking.
func warm(ctx context.Context, t target, reqs []request, workers int, verify func(*request, *authv3.CheckResponse) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	for i := range workers {
		conn := t.conns[i%len(t.conns)]
		rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
		own := &request{}
		wg.Go(func() {
			for j := i; j < len(reqs); j += workers {
				req := &reqs[j]
				send := req
				if req.secretAt > 0 {
					send = own.randomized(req, rng)
				}
				res, err := checkWithRetry(ctx, conn, send)
				if err == nil {
					var resp authv3.CheckResponse
					if err = proto.Unmarshal(res.raw, &resp); err == nil {
						switch {
						case !res.allowed && req.expect.accepts(res.code):
						case !res.allowed:
							err = fmt.Errorf("denied: %s", describeDeny(res.raw))
						default:
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
		return &insaneError{fmt.Sprintf("%s: %d of %d requests were not a correct answer; the setup is wrong. First ones:\n  %s",
			t.name, len(failures), len(reqs), joinLines(shown))}
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

// verifier checks one allow of extauthz in full; limit is its OPENAPI_RATE_LIMIT_PER_TOKEN.
func verifier(limit string) func(*request, *authv3.CheckResponse) error {
	return func(req *request, resp *authv3.CheckResponse) error {
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
		if added["ratelimit-limit"] != limit || err != nil || strconv.Itoa(remaining) == limit {
			return fmt.Errorf("allow without the limiter's count (ratelimit-limit %q, ratelimit-remaining %q)",
				added["ratelimit-limit"], added["ratelimit-remaining"])
		}
		return nil
	}
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
