package deviceflow

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/enterprise/enterprisetest"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// faultEnv is a deviceflow server (EE, so every route is live) whose Redis is a private redis-server reached through the
// production client (deadlines, health breaker), and whose Postgres is the shared server, optionally behind a fault proxy.
// The embedded flowEnv's rdb, pool and store reach both directly, for the test's own reads while the server's path is down.
type faultEnv struct {
	*flowEnv
	redis   *testenv.RedisServer
	pgProxy *testenv.FaultProxy // nil unless the server reaches Postgres through it
	metrics *sdkmetric.ManualReader
	mints   atomic.Int32
	// beforeMint runs before each of the server's mints, with the mint's number (from 1).
	beforeMint func(n int32)
}

// hookedTokens lets a test act between a poll's claim and its mint.
type hookedTokens struct {
	tokens.Store
	env *faultEnv
}

func (h hookedTokens) Mint(ctx context.Context, req tokens.MintRequest) (tokens.Minted, error) {
	n := h.env.mints.Add(1)
	if h.env.beforeMint != nil {
		h.env.beforeMint(n)
	}
	return h.Store.Mint(ctx, req)
}

func newFaultEnv(t *testing.T, postgresBehindProxy bool) *faultEnv {
	t.Helper()
	redisSrv := testenv.StartRedisServer(t)
	rdb, err := redisclient.Open(redisclient.Options{URL: redisSrv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, flowFixture)
	serverPool := pool
	var proxy *testenv.FaultProxy
	if postgresBehindProxy {
		u, err := url.Parse(pool.Config().ConnString())
		if err != nil {
			t.Fatal(err)
		}
		proxy = testenv.StartFaultProxy(t, u.Host)
		u.Host = proxy.Addr
		serverPool = testenv.Pool(t, u.String())
	}
	ent := enterprisetest.NewServer(t)
	cfg := Config{SecretKey: flowSecret, ConsoleWebURL: "http://console.test", ConsoleAPIURL: "http://api.test",
		KnownClientIDs: []string{"difyctl"}, ApprovePerHour: 100, TTL: tokens.TTLPolicy{Days: 14}, EnterpriseEnabled: true,
		TrustedProxyHops: 1}
	reader := sdkmetric.NewManualReader()
	e := &faultEnv{
		flowEnv: &flowEnv{t: t, rdb: redisSrv.Client(), pool: pool, store: postgres.NewTokenStore(pool), clock: &flowClock{},
			logs: &flowLogs{}, cfg: cfg},
		redis: redisSrv, pgProxy: proxy, metrics: reader,
	}
	e.srv, err = New(Deps{
		Tokens:     hookedTokens{Store: postgres.NewTokenStore(serverPool), env: e},
		Directory:  postgres.NewDirectory(serverPool),
		Redis:      rdb,
		Limiter:    ratelimit.NewSlidingWindow(rdb),
		Revoker:    tokencache.NewRevoker(rdb, time.Minute),
		Enterprise: enterprise.New(ent.URL(), ent.SecretKey(), enterprise.Options{}),
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:        e.clock.Now,
		Meter:      sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"),
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	e.url, e.http = ts.URL, ts.Client()
	return e
}

// warmUp runs one login (Bob's, so Ann's rows stay the test's) so that the private Redis has every script loaded, as a
// long-running Redis has: a command queued during a hang then runs late as EVALSHA, instead of failing with NOSCRIPT.
func (e *faultEnv) warmUp() {
	e.t.Helper()
	e.login(flowBob, "warm-up")
	e.mints.Store(0)
}

// counter reads the sum of a counter (all attribute sets) or of the attribute set whose dependency label is dep.
func (e *faultEnv) counter(name, dep string) int64 {
	e.t.Helper()
	if dep == "" {
		return testenv.CounterSum(e.t, e.metrics, name)
	}
	return testenv.CounterByAttribute(e.t, e.metrics, name, "dependency")[dep]
}

// wantUnavailable asserts the 503 every dependency failure is answered with.
func wantUnavailable(t *testing.T, what string, r flowResp) {
	t.Helper()
	if r.Status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || r.str("message") == "" ||
		r.Header.Get("Retry-After") != "5" {
		t.Fatalf("%s: %d %s (Retry-After %q), want 503 temporarily_unavailable with Retry-After",
			what, r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
}

// pollUntilDelivered polls as a client does until the token arrives. Every answer on the way must be one a client keeps
// polling after: never expired_token. It returns the token response and how many polls were told to wait.
func (e *faultEnv) pollUntilDelivered(dc string, within time.Duration) (flowResp, int) {
	e.t.Helper()
	var got flowResp
	pending := 0
	testenv.Eventually(e.t, within, "the approval to be delivered", func() bool {
		r := e.pollJSON(dc)
		switch {
		case r.Status == http.StatusOK:
			got = r
			return true
		case r.Status == http.StatusServiceUnavailable && r.str("error") == "temporarily_unavailable":
		case r.Status == http.StatusBadRequest && r.str("error") == "authorization_pending":
			pending++
		default:
			e.t.Fatalf("a poll before the token was delivered answered %d %s", r.Status, r.Raw)
		}
		return false
	})
	if !accountTokenRE.MatchString(got.str("access_token")) {
		e.t.Fatalf("delivered %s", got.Raw)
	}
	return got, pending
}

// liveRows are Ann's live tokens.
func (e *faultEnv) liveRows() []tokens.Token {
	e.t.Helper()
	rows, _, err := e.store.ListLive(context.Background(), tokens.AccountSubject(flowAnn.ID, flowAnn.Email), time.Now(),
		tokens.Page{Page: 1, Limit: 50})
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

// wantOneLiveToken asserts that the delivered token is the device's one live token.
func (e *faultEnv) wantOneLiveToken(delivered flowResp) {
	e.t.Helper()
	rows := e.liveRows()
	if len(rows) != 1 || rows[0].TokenHash != tokens.Hash(delivered.str("access_token")) || rows[0].ID != delivered.str("token_id") {
		e.t.Fatalf("live rows %+v, want exactly the delivered token %s", rows, delivered.str("token_id"))
	}
}

// TestApprovalPolledDuringAHangIsDeliveredAfterResume: the CLI polls while Redis hangs and is told to retry; the claim its
// poll queued runs when Redis resumes, after the poll gave up, and only holds the approval for one lease: a later poll
// gets the token, never expired_token.
func TestApprovalPolledDuringAHangIsDeliveredAfterResume(t *testing.T) {
	e := newFaultEnv(t, false)
	e.warmUp()
	dc, uc := e.issue("laptop")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	e.redis.Pause()
	t.Cleanup(e.redis.Resume)
	wantUnavailable(t, "poll while Redis hangs", promptly(t, "poll while Redis hangs", func() flowResp { return e.pollJSON(dc) }))

	e.redis.Resume()
	dkey := deviceKey(hashDeviceCode(dc))
	testenv.Eventually(t, 5*time.Second, "the queued claim to run late", func() bool {
		return e.rdb.HGet(context.Background(), dkey, fClaimID).Val() != ""
	})
	got, pending := e.pollUntilDelivered(dc, 20*time.Second)
	if pending == 0 {
		t.Fatal("no poll was told to wait while the late claim's lease ran")
	}
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	e.wantOneLiveToken(got)
	if e.counter("authgate_deviceflow_dependency_errors", depRedis) == 0 {
		t.Fatal("the 503 was not counted as a Redis failure")
	}
}

// TestCompletionLostToAHangIsDeliveredLater: Redis hangs after the poll claimed and minted, so the completion times out
// and the poll answers 503; the completion, run late, gives the approval back instead of consuming it. The next poll mints
// again, rotating the undelivered token away, and delivers.
func TestCompletionLostToAHangIsDeliveredLater(t *testing.T) {
	e := newFaultEnv(t, false)
	e.warmUp()
	dc, uc := e.issue("laptop")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	e.beforeMint = func(n int32) {
		if n == 1 {
			e.redis.Pause()
		}
	}
	t.Cleanup(e.redis.Resume)
	wantUnavailable(t, "poll whose completion hangs", promptly(t, "poll whose completion hangs", func() flowResp { return e.pollJSON(dc) }))
	undelivered := e.liveRows()
	if len(undelivered) != 1 {
		t.Fatalf("live rows after the failed poll: %+v", undelivered)
	}

	e.redis.Resume()
	dkey := deviceKey(hashDeviceCode(dc))
	testenv.Eventually(t, 5*time.Second, "the late completion to give the approval back", func() bool {
		h := e.rdb.HGetAll(context.Background(), dkey).Val()
		return h[fStatus] == "approved" && h[fClaimID] == ""
	})
	got, _ := e.pollUntilDelivered(dc, 10*time.Second)
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	e.wantOneLiveToken(got)
	if got.str("token_id") != undelivered[0].ID || e.mints.Load() != 2 || e.logs.count(auditTokenRotated) != 1 {
		t.Fatalf("the second mint must rotate the undelivered row in place: token_id %s (was %s), %d mints, %d rotations",
			got.str("token_id"), undelivered[0].ID, e.mints.Load(), e.logs.count(auditTokenRotated))
	}
	testenv.Eventually(t, 5*time.Second, "the undelivered token to be tombstoned", func() bool {
		return e.tombstoned(undelivered[0].TokenHash)
	})
}

// TestConcurrentPollersAcrossAHangGetOneToken: 20 clients poll one approved code while Redis hangs in the middle of the
// first mint and resumes; exactly one of them ever gets a token, every other ends with expired_token, and the device has one
// live token: the delivered one.
func TestConcurrentPollersAcrossAHangGetOneToken(t *testing.T) {
	e := newFaultEnv(t, false)
	e.warmUp()
	dc, uc := e.issue("laptop")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	var unavailable atomic.Int32
	e.beforeMint = func(n int32) {
		if n == 1 {
			e.redis.Pause()
		}
	}
	t.Cleanup(e.redis.Resume)
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		deadline := time.Now().Add(20 * time.Second)
		for unavailable.Load() < 20 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // the polling interval of a bounded wait for the pollers to see the hang
		}
		e.redis.Resume()
	}()

	const pollers = 20
	final := make([]flowResp, pollers)
	var delivered []flowResp
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range pollers {
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond) // the client's poll interval
			defer tick.Stop()
			deadline := time.Now().Add(45 * time.Second)
			for time.Now().Before(deadline) {
				r := e.pollJSON(dc)
				switch {
				case r.Status == http.StatusOK:
					mu.Lock()
					delivered = append(delivered, r)
					mu.Unlock()
					final[i] = r
					return
				case r.Status == http.StatusBadRequest && r.str("error") == "expired_token":
					final[i] = r
					return
				case r.Status == http.StatusServiceUnavailable:
					unavailable.Add(1)
				case r.Status == http.StatusBadRequest && r.str("error") == "authorization_pending":
				default:
					final[i] = r
					return
				}
				<-tick.C
			}
		})
	}
	wg.Wait()
	<-resumed
	if len(delivered) != 1 {
		t.Fatalf("%d pollers got a token, want exactly 1", len(delivered))
	}
	for i, r := range final {
		if r.Status != http.StatusOK && !(r.Status == http.StatusBadRequest && r.str("error") == "expired_token") {
			t.Fatalf("poller %d ended with %d %s", i, r.Status, r.Raw)
		}
	}
	if unavailable.Load() == 0 {
		t.Fatal("no poll saw the hang")
	}
	e.wantOneLiveToken(delivered[0])
}

// TestKilledRedisTellsTheClientItsLoginWasLost: Redis restarts without its data. While it is down polls are 503; once it
// is back, a code it forgot is answered expired_token with a message that says the login's state was lost and a new login
// is needed (not the plain "unknown, expired or used"), with one warning and a metric. Codes older than the new state are
// plainly expired.
func TestKilledRedisTellsTheClientItsLoginWasLost(t *testing.T) {
	e := newFaultEnv(t, false)
	pendingDC, _ := e.issue("laptop")
	approvedDC, uc := e.issue("desktop")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	e.redis.Stop()
	wantUnavailable(t, "poll while Redis is down", promptly(t, "poll while Redis is down", func() flowResp { return e.pollJSON(approvedDC) }))
	e.redis.Start()
	testenv.Eventually(t, 5*time.Second, "deviceflow to reach Redis again", func() bool {
		return e.pollJSON(pendingDC).Status != http.StatusServiceUnavailable
	})
	wantLost := func(dc string) {
		t.Helper()
		r := e.pollJSON(dc)
		wantErr(t, r, http.StatusBadRequest, "expired_token")
		if msg := r.str("message"); !strings.Contains(msg, "lost") || !strings.Contains(msg, "new login") {
			t.Fatalf("message %q does not tell the client its login was lost", msg)
		}
	}
	wantLost(pendingDC)
	wantLost(approvedDC)
	if n := e.counter("authgate_deviceflow_device_state_lost", ""); n < 3 {
		t.Fatalf("state-lost counted %d times, want every such poll", n)
	}
	if n := e.logs.Count("Redis probably lost its data"); n != 1 {
		t.Fatalf("%d state-lost warnings, want 1 (throttled)", n)
	}

	// A new login works.
	newDC, newUC := e.issue("tablet")
	if r := e.approve(newUC, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve after the restart: %d %s", r.Status, r.Raw)
	}
	if r := e.pollJSON(newDC); r.Status != http.StatusOK {
		t.Fatalf("poll after the restart: %d %s", r.Status, r.Raw)
	}
	// A code issued after the restart in the lost code's slot starts that slot's new state: the lost code still explains
	// itself while the new state is younger than a code's lifetime, and is plainly expired after that.
	now := e.clock.Now()
	for {
		dc, _, err := e.srv.State().Issue(context.Background(), Authorization{ClientID: "difyctl", DeviceLabel: "x",
			Interval: initialInterval, CreatedAt: now, ExpiresAt: now.Add(codeLifetime)})
		if err != nil {
			t.Fatal(err)
		}
		if epochKey(hashDeviceCode(dc)) == epochKey(hashDeviceCode(pendingDC)) {
			break
		}
	}
	wantLost(pendingDC)
	e.clock.Set(now.Add(codeLifetime))
	r := e.pollJSON(pendingDC)
	wantErr(t, r, http.StatusBadRequest, "expired_token")
	if strings.Contains(r.str("message"), "lost") {
		t.Fatalf("a code older than the new state is reported lost: %s", r.Raw)
	}
}

// endpointCall is one request to one deviceflow endpoint.
type endpointCall struct {
	name string
	send func() flowResp
}

// everyEndpoint is a request to each deviceflow endpoint that touches Redis or Postgres, well-formed and authenticated.
func (e *faultEnv) everyEndpoint(dc, uc, token, tokenID string) []endpointCall {
	c := e.consoleFor(flowAnn.ID)
	grant, g, err := e.srv.envelopes().signGrant(e.cfg.ConsoleAPIURL, "ext@partner.example", "https://idp.partner.example", uc)
	if err != nil {
		e.t.Fatal(err)
	}
	grantOpts := []reqOpt{withCookies(&http.Cookie{Name: approvalGrantCookieName, Value: grant}), withHeader(csrfHeader, g.CSRFToken)}
	now := time.Now()
	assertion := signRaw(e.t, jwt.SigningMethodHS256, []byte(flowSecret), envelopeKeyID, jwt.MapClaims{"aud": audExternalSubjectAssertion, "iat": now.Unix(),
		"exp": now.Add(90 * time.Second).Unix(), "email": "ext@partner.example", "issuer": "https://idp.partner.example",
		"user_code": uc, "nonce": newSSONonce()})
	bearer := withBearer(token)
	page := e.openPage() // rendering the page needs neither Redis nor Postgres
	return []endpointCall{
		{"device code", func() flowResp { return e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl"}) }},
		{"token poll", func() flowResp { return e.pollJSON(dc) }},
		{"lookup", func() flowResp { return e.get("/oauth/device/lookup?user_code=" + uc) }},
		{"approve", func() flowResp { return e.approve(uc, c) }},
		{"deny", func() flowResp {
			return e.postJSON("/oauth/device/deny", map[string]string{"user_code": uc}, c.opts()...)
		}},
		{"device details", func() flowResp {
			return e.do(http.MethodGet, "/device/details?user_code="+uc, "", nil, withCookies(c.cookies...))
		}},
		{"sso-initiate", func() flowResp { return e.ssoInitiate(uc, page) }},
		{"sso-complete", func() flowResp {
			return e.get("/oauth/device/sso-complete?sso_assertion=" + url.QueryEscape(assertion))
		}},
		{"approve-external", func() flowResp {
			return e.postJSON("/oauth/device/approve-external", map[string]string{"user_code": uc}, grantOpts...)
		}},
		{"me", func() flowResp { return e.get("/me", bearer) }},
		{"account", func() flowResp { return e.get("/account", bearer) }},
		{"sessions", func() flowResp { return e.get("/account/sessions", bearer) }},
		{"revoke session", func() flowResp {
			return e.do(http.MethodDelete, apiPrefix+"/account/sessions/"+tokenID, "", nil, bearer)
		}},
		{"revoke self", func() flowResp { return e.do(http.MethodDelete, apiPrefix+"/account/sessions/self", "", nil, bearer) }},
		{"RFC 7009 revoke", func() flowResp {
			return e.postForm("/oauth/revoke", url.Values{"token": {token}, "client_id": {"difyctl"}})
		}},
	}
}

// sweep calls every endpoint rounds times (with Redis, the first calls find it hung, later ones find the breaker open) and
// requires each answer within 2 s, and every 5xx to be 503 temporarily_unavailable with Retry-After.
func (e *faultEnv) sweep(what string, rounds int, calls []endpointCall) (unavailable int) {
	e.t.Helper()
	for range rounds {
		for _, c := range calls {
			r := promptly(e.t, what+": "+c.name, c.send)
			if r.Status >= 500 {
				wantUnavailable(e.t, what+": "+c.name, r)
				unavailable++
			}
		}
	}
	return unavailable
}

// TestEveryEndpointAnswersPromptlyWhileRedisHangs: with Redis hung, every endpoint answers within 2 s; what needs Redis
// is 503 temporarily_unavailable with Retry-After. Once Redis resumes, the service works again.
func TestEveryEndpointAnswersPromptlyWhileRedisHangs(t *testing.T) {
	e := newFaultEnv(t, false)
	tok := e.login(flowAnn, "laptop")
	dc, uc := e.issue("desktop")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	_, pendingUC := e.issue("tablet")
	calls := e.everyEndpoint(dc, pendingUC, tok.str("token"), tok.str("token_id"))
	e.redis.Pause()
	t.Cleanup(e.redis.Resume)
	if n := e.sweep("Redis hung", 2, calls); n < len(calls) {
		t.Fatalf("only %d answers of %d were 503 while Redis hung", n, 2*len(calls))
	}
	if e.logs.Count("dependency unavailable") > 3 {
		t.Fatalf("%d request-failure lines for one outage, want them throttled", e.logs.Count("dependency unavailable"))
	}
	e.redis.Resume()
	got, _ := e.pollUntilDelivered(dc, 20*time.Second)
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	if got.str("token_id") == "" {
		t.Fatal(got.Raw)
	}
}

// TestEveryEndpointAnswersPromptlyWhilePostgresHangsOrStops: Postgres hung (connections stall) and then down (refused):
// every endpoint answers within 2 s, what needs Postgres with 503; an approval polled during the outage is delivered once
// Postgres is back.
func TestEveryEndpointAnswersPromptlyWhilePostgresHangsOrStops(t *testing.T) {
	e := newFaultEnv(t, true)
	tok := e.login(flowAnn, "laptop")
	dc, uc := e.issue("desktop")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	_, pendingUC := e.issue("tablet")
	calls := e.everyEndpoint(dc, pendingUC, tok.str("token"), tok.str("token_id"))

	e.pgProxy.Pause()
	if n := e.sweep("Postgres hung", 1, calls); n == 0 {
		t.Fatal("no endpoint needed Postgres")
	}
	wantUnavailable(t, "poll while Postgres hangs", e.pollJSON(dc))
	e.pgProxy.Stop()
	e.pgProxy.Resume()
	if n := e.sweep("Postgres down", 1, calls); n == 0 {
		t.Fatal("no endpoint needed Postgres")
	}
	if e.counter("authgate_deviceflow_dependency_errors", depPostgres) == 0 {
		t.Fatal("no failure counted as Postgres's")
	}
	e.pgProxy.Start()
	got, _ := e.pollUntilDelivered(dc, 20*time.Second)
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
	if got.str("token_id") == "" {
		t.Fatal(got.Raw)
	}
}
