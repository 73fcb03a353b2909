package chaos_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/testenv"
)

const (
	secretKey = "chaos-secret-key-that-is-long-enough-0123456789"
	accountID = "6a1f1e4e-7b0a-4c39-9a59-0f3a1b2c3d4e"
	tenantID  = "0b4e2a51-7a0e-4f2e-8d3c-5b6a7c8d9e0f"
	appID     = "3c2b1a09-8f7e-4d6c-9b5a-4a3b2c1d0e9f"
	email     = "chaos@example.com"
)

// TestChaos is `make chaos`. CHAOS_DURATION (default 60s) sets the length of the faulty phase.
func TestChaos(t *testing.T) {
	if os.Getenv("CHAOS") == "" {
		t.Skip("run with `make chaos` (CHAOS=1)")
	}
	duration := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("CHAOS_DURATION")); err == nil && d >= 20*time.Second {
		duration = d
	}

	bins := buildBinaries(t)
	pg := testenv.StartPostgresServer(t)
	rds := testenv.StartRedisServer(t)
	common := map[string]string{
		"DATABASE_URL": pg.URL(), "REDIS_URL": rds.URL(), "SECRET_KEY": secretKey, "LOG_LEVEL": "info",
		"TOKEN_CACHE_TTL": "60s",
	}
	runOnce(t, bins+"/deviceflow", []string{"migrate"}, common)
	seed(t, pg.URL())

	extAddr, extAdmin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	ext := startProcess(t, bins+"/extauthz", nil, with(common, "EXTAUTHZ_GRPC_ADDR", extAddr, "ADMIN_ADDR", extAdmin,
		"SHUTDOWN_DRAIN_DELAY", "0",
		"OPENAPI_RATE_LIMIT_PER_TOKEN", "100000", "CHECK_TIMEOUT", "150ms"), extAdmin)
	dfAddr, dfAdmin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	df := startProcess(t, bins+"/deviceflow", nil, with(common, "DEVICEFLOW_ADDR", dfAddr, "ADMIN_ADDR", dfAdmin,
		"TRUSTED_PROXY_HOPS", "1", "DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR", "100000",
		"ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", "false"), dfAdmin)

	conn, err := grpc.NewClient(extAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := &run{t: t, df: "http://" + dfAddr, authz: authv3.NewAuthorizationClient(conn), start: time.Now()}

	// Warm up: one login, so the vitals below are of processes that have served.
	warm := r.login(context.Background(), "warm-up", time.Now().Add(30*time.Second))
	if warm == nil || warm.token == "" {
		t.Fatal("the warm-up login did not deliver a token on healthy dependencies")
	}
	before := map[string]vitals{ext.Name: ext.vitals(context.Background()), df.Name: df.vitals(context.Background())}
	linesBefore := map[string]int{ext.Name: ext.logLines(), df.Name: df.logLines()}

	r.start = time.Now()
	loadEnd := r.start.Add(duration)
	ctx, stopLoad := context.WithDeadline(context.Background(), loadEnd)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() { r.loginLoop(ctx, w, loadEnd.Add(60*time.Second)) })
	}
	for range 4 {
		wg.Go(func() { r.checkLoop(ctx) })
	}
	wg.Go(func() { r.revokeLoop(ctx) })
	r.faults(ctx, duration, rds, pg)
	<-ctx.Done()
	stopLoad()
	healthyAgain := time.Now()
	wg.Wait() // login loops finish their polls (bounded by their own deadline)

	// After the faults: every token must be decided correctly now that both dependencies are up.
	r.finalChecks(context.Background())
	after := map[string]vitals{ext.Name: ext.vitals(context.Background()), df.Name: df.vitals(context.Background())}

	res := r.evaluate(t, pg.URL())
	report := r.report(res, before, after, map[string]int{
		ext.Name: ext.logLines() - linesBefore[ext.Name], df.Name: df.logLines() - linesBefore[df.Name]},
		duration, time.Since(healthyAgain))
	fmt.Println(report)
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		_ = os.WriteFile(path, []byte(report), 0o644)
	}
	if res.approvalsLost > 0 || res.revokedAllowedLate > 0 || res.wrongAllows > 0 || res.unexpected > 0 ||
		res.doubleDeliveries > 0 {
		t.Fatalf("chaos found violations:\n%s", report)
	}
	if res.delivered == 0 || res.checksAllowed == 0 || res.revocationsCommitted == 0 {
		t.Fatalf("the load did too little to prove anything:\n%s", report)
	}
}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func seed(t *testing.T, pgURL string) {
	t.Helper()
	pool := testenv.Pool(t, pgURL)
	if _, err := pool.Exec(context.Background(), dirfixture.Schema); err != nil {
		t.Fatal(err)
	}
	testenv.SeedDirectory(t, pool, dirfixture.Fixture{
		Tenants:  []directory.Tenant{{ID: tenantID, Name: "Chaos", Status: directory.TenantStatusNormal}},
		Accounts: []directory.Account{{ID: accountID, Email: email, Name: "Chaos", Status: directory.AccountStatusActive}},
		Apps: []directory.App{{ID: appID, TenantID: tenantID, Name: "Chaos app", Mode: "workflow",
			Status: directory.AppStatusNormal, EnableAPI: true}},
		Joins: []dirfixture.Join{{TenantID: tenantID, AccountID: accountID, Role: "owner", Current: true}},
	})
}

// run is one chaos run's shared state.
type run struct {
	t     *testing.T
	df    string
	authz authv3.AuthorizationClient
	start time.Time

	mu       sync.Mutex
	logins   []*login
	tokens   []*login // delivered, in order
	checks   []checkResult
	outages  []interval // Redis not answering (hung or dead)
	kills    []time.Time
	events   []string
	revokes  map[string]int // token id -> DELETE statuses seen, last one wins
	seq      atomic.Int64
	ipSerial atomic.Int64
}

type interval struct{ from, to time.Time }

type login struct {
	label       string
	deviceCode  string
	userCode    string
	approveSent time.Time // when the approval that succeeded was sent
	approvedAt  time.Time // zero: never approved
	token       string
	tokenID     string
	deliveries  int
	lastError   string
	finishedAt  time.Time
}

type checkResult struct {
	at      time.Time
	tokenID string // "" for a random bearer
	allowed bool
	status  int // deny status; 0 on allow
	rpcErr  bool
}

func (r *run) elapsed() string { return fmt.Sprintf("%5.1fs", time.Since(r.start).Seconds()) }

func (r *run) event(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, r.elapsed()+"  "+fmt.Sprintf(format, args...))
}

// faults runs the schedule: Redis hung, killed and restarted, hung again; Postgres restarted and crashed.
func (r *run) faults(ctx context.Context, d time.Duration, rds *testenv.RedisServer, pg *testenv.PostgresServer) {
	at := func(frac float64) bool {
		target := r.start.Add(time.Duration(frac * float64(d)))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(target)):
			return true
		}
	}
	outage := func(from time.Time) {
		r.mu.Lock()
		r.outages = append(r.outages, interval{from, time.Now()})
		r.mu.Unlock()
	}
	if at(0.12) {
		r.event("redis hung (SIGSTOP)")
		from := time.Now()
		rds.Pause()
		if at(0.22) {
			rds.Resume()
			outage(from)
			r.event("redis resumed (SIGCONT)")
		}
	}
	if at(0.32) {
		r.event("redis killed")
		from := time.Now()
		r.mu.Lock()
		r.kills = append(r.kills, from)
		r.mu.Unlock()
		rds.Stop()
		if at(0.37) {
			rds.Start()
			outage(from)
			r.event("redis restarted (empty)")
		}
	}
	if at(0.47) {
		r.event("postgres restarting (fast)")
		pg.Restart()
		r.event("postgres restarted")
	}
	if at(0.60) {
		r.event("redis hung (SIGSTOP)")
		from := time.Now()
		rds.Pause()
		if at(0.73) {
			rds.Resume()
			outage(from)
			r.event("redis resumed (SIGCONT)")
		}
	}
	if at(0.82) {
		r.event("postgres crashed (immediate stop)")
		pg.Crash()
		if at(0.86) {
			pg.Start()
			r.event("postgres recovered")
		}
	}
}

// --- device logins ---------------------------------------------------------------------------------------------------

func (r *run) loginLoop(ctx context.Context, worker int, pollDeadline time.Time) {
	for n := 0; ctx.Err() == nil; n++ {
		r.login(ctx, fmt.Sprintf("chaos-%d-%d", worker, n), pollDeadline)
		pause(ctx, time.Second) // a login a second per worker: a busy team, not a flood
	}
}

// login runs one device login like a CLI and its user: code, approve (retried while the service is unavailable), poll at
// the code's interval until a token or a final answer. Polling goes on after the load phase, up to pollDeadline.
func (r *run) login(ctx context.Context, label string, pollDeadline time.Time) *login {
	ip := fmt.Sprintf("10.%d.%d.%d", r.ipSerial.Add(1)/65536%256, r.ipSerial.Load()/256%256, r.ipSerial.Load()%256)
	l := &login{label: label}
	var code struct {
		DeviceCode string `json:"device_code"`
		UserCode   string `json:"user_code"`
		Interval   int    `json:"interval"`
	}
	status, body := r.post(ctx, "/openapi/v1/oauth/device/code", ip, url.Values{"client_id": {"difyctl"},
		"device_label": {label}}, nil)
	if status != http.StatusOK || json.Unmarshal(body, &code) != nil {
		return nil
	}
	l.deviceCode, l.userCode = code.DeviceCode, code.UserCode
	r.mu.Lock()
	r.logins = append(r.logins, l)
	r.mu.Unlock()

	for attempt := 0; ; attempt++ {
		sent := time.Now()
		st, b := r.approve(ctx, l.userCode)
		if st == http.StatusOK {
			l.approveSent = sent
			l.approvedAt = time.Now()
			break
		}
		l.lastError = fmt.Sprintf("approve %d %s", st, b)
		if st != http.StatusServiceUnavailable && st != 0 || attempt > 20 || ctx.Err() != nil {
			return l
		}
		pause(ctx, 500*time.Millisecond)
	}

	interval := time.Duration(max(code.Interval, 1)) * time.Second
	pollCtx, cancel := context.WithDeadline(context.Background(), pollDeadline)
	defer cancel()
	for first := true; pollCtx.Err() == nil; first = false {
		if !first {
			pause(pollCtx, interval)
		}
		st, b := r.post(pollCtx, "/openapi/v1/oauth/device/token", ip, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {l.deviceCode},
			"client_id": {"difyctl"}}, nil)
		var resp struct {
			AccessToken string `json:"access_token"`
			TokenID     string `json:"token_id"`
			Error       string `json:"error"`
			Message     string `json:"message"`
		}
		_ = json.Unmarshal(b, &resp)
		switch {
		case st == http.StatusOK && resp.AccessToken != "":
			r.mu.Lock()
			l.deliveries++
			if l.token == "" {
				l.token, l.tokenID = resp.AccessToken, resp.TokenID
				r.tokens = append(r.tokens, l)
			}
			r.mu.Unlock()
			// A real CLI stops here; one more poll proves the code cannot deliver a second token.
			st2, b2 := r.post(pollCtx, "/openapi/v1/oauth/device/token", ip, url.Values{
				"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {l.deviceCode},
				"client_id": {"difyctl"}}, nil)
			if st2 == http.StatusOK && strings.Contains(string(b2), "access_token") {
				r.mu.Lock()
				l.deliveries++
				r.mu.Unlock()
			}
			l.finishedAt = time.Now()
			return l
		case resp.Error == "slow_down":
			interval += 5 * time.Second
		case resp.Error == "authorization_pending", st == http.StatusServiceUnavailable, st == 0:
			l.lastError = fmt.Sprintf("poll %d %s", st, resp.Error)
		default: // expired_token, access_denied, ...: a final answer
			l.lastError = fmt.Sprintf("poll %d %s: %s", st, resp.Error, resp.Message)
			l.finishedAt = time.Now()
			return l
		}
	}
	l.finishedAt = time.Now()
	return l
}

func (r *run) approve(ctx context.Context, userCode string) (int, []byte) {
	body, _ := json.Marshal(map[string]string{"user_code": userCode})
	h := testenv.ConsoleSession(secretKey, accountID)
	h["Content-Type"] = "application/json"
	return testenv.Do(ctx, http.MethodPost, r.df+"/openapi/v1/oauth/device/approve", "", body, h)
}

func (r *run) post(ctx context.Context, path, ip string, form url.Values, headers map[string]string) (int, []byte) {
	h := map[string]string{"X-Forwarded-For": ip}
	for k, v := range headers {
		h[k] = v
	}
	return testenv.Do(ctx, http.MethodPost, r.df+path, "", form, h)
}

// pause paces the load generator (a client's poll interval, a worker's request rate); it is not how any outcome is awaited.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// --- Checks ----------------------------------------------------------------------------------------------------------

func (r *run) checkLoop(ctx context.Context) {
	tick := time.NewTicker(5 * time.Millisecond) // ~200 Checks/s per worker: load, not a flood, on a 2-core machine
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		token, tokenID := randomBearer(), ""
		r.mu.Lock()
		if n := len(r.tokens); n > 0 && randInt(100) >= 15 {
			l := r.tokens[randInt(n)]
			token, tokenID = l.token, l.tokenID
		}
		r.mu.Unlock()
		res := r.check(ctx, token)
		res.tokenID = tokenID
		r.mu.Lock()
		r.checks = append(r.checks, res)
		r.mu.Unlock()
	}
}

func (r *run) check(ctx context.Context, token string) checkResult {
	res := checkResult{at: time.Now()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	resp, err := r.authz.Check(ctx, checkRequest(token, r.seq.Add(1)))
	switch {
	case err != nil:
		res.rpcErr = true
	case resp.GetOkResponse() != nil:
		res.allowed = true
	case resp.GetDeniedResponse() != nil:
		res.status = int(resp.GetDeniedResponse().GetStatus().GetCode())
	default:
		res.rpcErr = true
	}
	return res
}

func checkRequest(token string, id int64) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "192.0.2.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: strconv.FormatInt(id, 10), Method: "GET", Path: "/openapi/v1/apps/" + appID + "/info",
			Host: "api.example.com", Scheme: "https", Protocol: "HTTP/2",
			Headers: map[string]string{":method": "GET", ":path": "/openapi/v1/apps/" + appID + "/info",
				":authority": "api.example.com", "authorization": "Bearer " + token},
		}},
	}}
}

func randomBearer() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "dfoa_" + base64.RawURLEncoding.EncodeToString(b)
}

func randInt(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

// --- revocations -----------------------------------------------------------------------------------------------------

// revokeLoop revokes a delivered token every 1.5 s through DELETE /account/sessions/self, retrying one that failed, the
// way a user would.
func (r *run) revokeLoop(ctx context.Context) {
	r.mu.Lock()
	r.revokes = map[string]int{}
	r.mu.Unlock()
	next := 0
	var retry []*login
	for ctx.Err() == nil {
		pause(ctx, 1500*time.Millisecond)
		var l *login
		r.mu.Lock()
		switch {
		case len(retry) > 0:
			l, retry = retry[0], retry[1:]
		case next < len(r.tokens)-2: // leave the newest tokens live for the Checks
			l = r.tokens[next]
			next++
		}
		r.mu.Unlock()
		if l == nil {
			continue
		}
		st, _ := testenv.Do(ctx, http.MethodDelete, r.df+"/openapi/v1/account/sessions/self", l.token, nil, nil)
		r.mu.Lock()
		r.revokes[l.tokenID] = st
		r.mu.Unlock()
		if st != http.StatusNoContent {
			retry = append(retry, l)
		}
	}
}

// finalChecks checks every delivered token once more with both dependencies healthy.
func (r *run) finalChecks(ctx context.Context) {
	r.mu.Lock()
	toks := append([]*login(nil), r.tokens...)
	r.mu.Unlock()
	for _, l := range toks {
		res := r.check(ctx, l.token)
		res.tokenID = l.tokenID
		r.mu.Lock()
		r.checks = append(r.checks, res)
		r.mu.Unlock()
	}
	for range 50 {
		res := r.check(ctx, randomBearer())
		r.mu.Lock()
		r.checks = append(r.checks, res)
		r.mu.Unlock()
	}
}

// --- verdict ---------------------------------------------------------------------------------------------------------

type result struct {
	logins, approved, delivered, approvalsLost, approvalsLostToRedisKill, doubleDeliveries int
	checks, checksAllowed, checksDenied, checks503, unexpected, wrongAllows                int
	liveTokens429, revocationsCommitted, revokeRequestsFailed, revokedAllowedLate          int
	denyCodes, tokenDenyCodes, randomDenyCodes                                             map[int]int
	lost                                                                                   []string
}

func (r *run) evaluate(t *testing.T, pgURL string) result {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	res := result{denyCodes: map[int]int{}, tokenDenyCodes: map[int]int{}, randomDenyCodes: map[int]int{}}

	for _, l := range r.logins {
		res.logins++
		if l.approvedAt.IsZero() {
			continue
		}
		res.approved++
		if l.token != "" {
			res.delivered++
		}
		if l.deliveries > 1 {
			res.doubleDeliveries++
		}
		if l.token == "" {
			// Redis may have taken the approval and died before answering: count from when it was sent.
			if r.killedBetween(l.approveSent, l.finishedAt) {
				res.approvalsLostToRedisKill++
			} else {
				res.approvalsLost++
				res.lost = append(res.lost, fmt.Sprintf("%s approved at %.1fs: %s", l.label,
					l.approvedAt.Sub(r.start).Seconds(), l.lastError))
			}
		}
	}

	// Postgres is the truth about revocations, including those whose request failed.
	revokedAt := map[string]time.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("read revocations: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id::text, revoked_at FROM oauth_access_tokens WHERE revoked_at IS NOT NULL`)
	if err != nil {
		t.Fatalf("read revocations: %v", err)
	}
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			t.Fatal(err)
		}
		revokedAt[id] = at
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	res.revocationsCommitted = len(revokedAt)
	for _, st := range r.revokes {
		if st != http.StatusNoContent {
			res.revokeRequestsFailed++
		}
	}

	for _, c := range r.checks {
		res.checks++
		switch {
		case c.rpcErr:
			res.unexpected++
		case c.allowed:
			res.checksAllowed++
			if c.tokenID == "" {
				res.wrongAllows++
			} else if at, ok := revokedAt[c.tokenID]; ok && c.at.After(r.healthyFrom(at).Add(time.Second)) {
				res.revokedAllowedLate++
			}
		default:
			res.checksDenied++
			res.denyCodes[c.status]++
			if c.tokenID == "" {
				res.randomDenyCodes[c.status]++
			} else {
				res.tokenDenyCodes[c.status]++
				if at, revoked := revokedAt[c.tokenID]; c.status == 429 && (!revoked || c.at.Before(at)) {
					res.liveTokens429++
				}
			}
			if c.status == 503 {
				res.checks503++
			}
			valid := map[int]bool{401: true, 429: true, 503: true}
			if !valid[c.status] {
				res.unexpected++
			}
		}
	}
	return res
}

func (r *run) killedBetween(from, to time.Time) bool {
	if to.IsZero() {
		to = time.Now()
	}
	for _, k := range r.kills {
		if k.After(from) && k.Before(to) {
			return true
		}
	}
	return false
}

// healthyFrom is the first instant at or after t at which Redis answered.
func (r *run) healthyFrom(t time.Time) time.Time {
	for _, o := range r.outages {
		if !t.Before(o.from) && t.Before(o.to) {
			return o.to
		}
	}
	return t
}

func (r *run) report(res result, before, after map[string]vitals, lines map[string]int, d, tail time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nchaos: %s of load with faults, then %s of polling and final checks\n\n", d, tail.Round(time.Second))
	b.WriteString("schedule:\n")
	for _, e := range r.events {
		b.WriteString("  " + e + "\n")
	}
	byStatus := func(m map[int]int) string {
		codes := []string{}
		for _, c := range []int{401, 429, 503} {
			codes = append(codes, fmt.Sprintf("%d: %d", c, m[c]))
		}
		return strings.Join(codes, ", ")
	}
	rows := [][2]string{
		{"device logins started / approved / token delivered", fmt.Sprintf("%d / %d / %d", res.logins, res.approved, res.delivered)},
		{"approvals lost while Redis kept its data (must be 0)", strconv.Itoa(res.approvalsLost)},
		{"approvals lost to a Redis kill without persistence", strconv.Itoa(res.approvalsLostToRedisKill)},
		{"codes that delivered a second token (must be 0)", strconv.Itoa(res.doubleDeliveries)},
		{"Checks / allowed / denied", fmt.Sprintf("%d / %d / %d", res.checks, res.checksAllowed, res.checksDenied)},
		{"denials of delivered tokens (401 = revoked)", byStatus(res.tokenDenyCodes)},
		{"of those 429s, for tokens not yet revoked", strconv.Itoa(res.liveTokens429)},
		{"denials of random bearers", byStatus(res.randomDenyCodes)},
		{"revocations committed in Postgres / DELETEs that failed", fmt.Sprintf("%d / %d", res.revocationsCommitted, res.revokeRequestsFailed)},
		{"revoked tokens allowed > 1 s after Redis was healthy (must be 0)", strconv.Itoa(res.revokedAllowedLate)},
		{"wrong allows: random bearers allowed (must be 0)", strconv.Itoa(res.wrongAllows)},
		{"answers other than allow / deny / 503 (must be 0)", strconv.Itoa(res.unexpected)},
	}
	for _, name := range []string{"extauthz", "deviceflow"} {
		rows = append(rows, [2]string{name + " before → after", before[name].String() + " → " + after[name].String()})
		rows = append(rows, [2]string{name + " log lines during the run", strconv.Itoa(lines[name])})
	}
	b.WriteString("\n| measure | value |\n|---|---|\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], row[1])
	}
	for _, l := range res.lost {
		b.WriteString("lost: " + l + "\n")
	}
	return b.String()
}
