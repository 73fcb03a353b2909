package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

const (
	secretKey = "e2e-secret-key-that-is-long-enough-0123456789"
	accountID = "7b2d9c1e-4f3a-4b5c-8d6e-1a2b3c4d5e6f"
	tenantID  = "1c3e5a7b-9d2f-4e6a-8b1c-3d5e7f9a1b2c"
	email     = "e2e@example.com"
	// perToken is OPENAPI_RATE_LIMIT_PER_TOKEN for every extauthz of these tests (Dify's default).
	perToken = 60
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "authgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built.dir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// built holds the service binaries, compiled once for all the tests of a run.
var built struct {
	once sync.Once
	dir  string
	err  error
}

func services(t *testing.T) string {
	t.Helper()
	built.once.Do(func() { built.err = testenv.BuildServices(built.dir) })
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// stack is one deployment under test: one Postgres database, the Redis variables of one topology, and the processes
// started on them.
type stack struct {
	t      *testing.T
	bins   string
	pool   *pgxpool.Pool
	common map[string]string // DATABASE_URL, SECRET_KEY and the Redis variables, shared by every process
	ip     atomic.Int64      // a client address per device login, so per-address budgets never get in the way
}

func newStack(t *testing.T, redisVars map[string]string) *stack {
	t.Helper()
	bins := services(t)
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, dirfixture.Fixture{
		Tenants:  []directory.Tenant{{ID: tenantID, Name: "E2E", Status: directory.TenantStatusNormal}},
		Accounts: []directory.Account{{ID: accountID, Email: email, Name: "E2E", Status: directory.AccountStatusActive}},
		Joins:    []dirfixture.Join{{TenantID: tenantID, AccountID: accountID, Role: "owner", Current: true}},
	})
	common := map[string]string{"DATABASE_URL": pool.Config().ConnString(), "SECRET_KEY": secretKey, "LOG_LEVEL": "info"}
	for k, v := range redisVars {
		common[k] = v
	}
	return &stack{t: t, bins: bins, pool: pool, common: common}
}

func (s *stack) env(kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range s.common {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// extauthz is one running extauthz process and a gRPC client on it, as Envoy would hold.
type extauthz struct {
	proc   *testenv.Process
	client authv3.AuthorizationClient
}

// startExtauthz starts an extauthz replica. CHECK_TIMEOUT is generous: on a busy 2-core machine a limiter call that timed
// out would fail open and let a 61st request through, which is not what these tests are about. No proxy needs time to drop
// a stopping replica here, so it stops at once.
func (s *stack) startExtauthz(kv ...string) *extauthz {
	s.t.Helper()
	grpcAddr, admin := testenv.FreeAddr(s.t), testenv.FreeAddr(s.t)
	env := s.env(append([]string{"EXTAUTHZ_GRPC_ADDR", grpcAddr, "ADMIN_ADDR", admin, "CHECK_TIMEOUT", "2s",
		"OPENAPI_RATE_LIMIT_PER_TOKEN", fmt.Sprint(perToken), "SHUTDOWN_DRAIN_DELAY", "0"}, kv...)...)
	proc := testenv.StartProcess(s.t, s.bins+"/extauthz", nil, env, admin)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return &extauthz{proc: proc, client: authv3.NewAuthorizationClient(conn)}
}

// deviceflow is one running deviceflow process.
type deviceflow struct {
	proc *testenv.Process
	base string
}

// startDeviceflow starts a deviceflow replica behind one trusted proxy hop. Its pruner is off unless kv turns it on.
func (s *stack) startDeviceflow(kv ...string) *deviceflow {
	s.t.Helper()
	addr, admin := testenv.FreeAddr(s.t), testenv.FreeAddr(s.t)
	env := s.env(append([]string{"DEVICEFLOW_ADDR", addr, "ADMIN_ADDR", admin, "TRUSTED_PROXY_HOPS", "1",
		"DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR", "1000", "ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK", "false"}, kv...)...)
	return &deviceflow{proc: testenv.StartProcess(s.t, s.bins+"/deviceflow", nil, env, admin), base: "http://" + addr}
}

// --- Checks ----------------------------------------------------------------------------------------------------------

// checkMe asks e whether GET /openapi/v1/me with token may pass, as Envoy would.
func (e *extauthz) checkMe(ctx context.Context, token string) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h := map[string]string{":method": "GET", ":path": "/openapi/v1/me", ":authority": "api.example.com", ":scheme": "https",
		"authorization": "Bearer " + token, "x-forwarded-for": "203.0.113.9"}
	return e.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 41000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/openapi/v1/me", Host: "api.example.com", Scheme: "https", Protocol: "HTTP/2", Headers: h,
		}},
	}})
}

// status is the HTTP status a Check answered: 200 for an allow, the deny's status otherwise.
func status(resp *authv3.CheckResponse) int {
	if resp.GetOkResponse() != nil {
		return http.StatusOK
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// checkStatus is checkMe's status, failing the test on a gRPC error.
func (e *extauthz) checkStatus(t *testing.T, token string) int {
	t.Helper()
	resp, err := e.checkMe(context.Background(), token)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return status(resp)
}

// rateLimitRemaining is the RateLimit-Remaining an allow carries ("" when the limiter did not count it: Redis unavailable).
func rateLimitRemaining(resp *authv3.CheckResponse) string {
	for _, h := range resp.GetOkResponse().GetResponseHeadersToAdd() {
		if strings.EqualFold(h.GetHeader().GetKey(), "ratelimit-remaining") {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// spendBudget sends one token's whole per-token budget through the given replicas in turn and then one more request to
// each: all perToken are allowed, and every replica refuses the next one with 429, because they count in one Redis bucket.
func spendBudget(t *testing.T, token string, replicas ...*extauthz) {
	t.Helper()
	for i := range perToken {
		e := replicas[i%len(replicas)]
		resp, err := e.checkMe(context.Background(), token)
		if err != nil {
			t.Fatalf("Check %d: %v", i+1, err)
		}
		if status(resp) != http.StatusOK {
			t.Fatalf("Check %d of %d through replica %d: %d %s", i+1, perToken, i%len(replicas),
				status(resp), resp.GetDeniedResponse().GetBody())
		}
		if got, want := rateLimitRemaining(resp), fmt.Sprint(perToken-i-1); got != want {
			t.Fatalf("Check %d through replica %d: RateLimit-Remaining %q, want %s: the replicas do not share one bucket",
				i+1, i%len(replicas), got, want)
		}
	}
	for i, e := range replicas {
		if st := e.checkStatus(t, token); st != http.StatusTooManyRequests {
			t.Fatalf("request %d through replica %d: %d, want 429", perToken+1, i, st)
		}
	}
}

// --- device logins ---------------------------------------------------------------------------------------------------

// session is a delivered token.
type session struct{ token, id string }

type codeResponse struct {
	DeviceCode string `json:"device_code"`
	UserCode   string `json:"user_code"`
}

// tryLogin runs one device login like difyctl and its user: the code from one deviceflow, the approval through a second,
// the poll through a third (any may be the same). It reports the first step that did not succeed.
func (s *stack) tryLogin(ctx context.Context, codeAt, approveAt, pollAt *deviceflow, label string) (session, error) {
	n := s.ip.Add(1)
	ip := fmt.Sprintf("10.%d.%d.%d", n/65536%256, n/256%256, n%256)
	st, body := testenv.Do(ctx, http.MethodPost, codeAt.base+"/openapi/v1/oauth/device/code", "",
		url.Values{"client_id": {"difyctl"}, "device_label": {label}}, map[string]string{"X-Forwarded-For": ip})
	var code codeResponse
	if st != http.StatusOK || json.Unmarshal(body, &code) != nil || code.UserCode == "" {
		return session{}, fmt.Errorf("device code: %d %s", st, body)
	}
	if st, body := approve(ctx, approveAt, code.UserCode); st != http.StatusOK {
		return session{}, fmt.Errorf("approve: %d %s", st, body)
	}
	st, body = testenv.Do(ctx, http.MethodPost, pollAt.base+"/openapi/v1/oauth/device/token", "", url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {code.DeviceCode},
		"client_id": {"difyctl"}}, map[string]string{"X-Forwarded-For": ip})
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenID     string `json:"token_id"`
	}
	if st != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" || tok.TokenID == "" {
		return session{}, fmt.Errorf("poll: %d %s", st, body)
	}
	return session{token: tok.AccessToken, id: tok.TokenID}, nil
}

func (s *stack) login(codeAt, approveAt, pollAt *deviceflow, label string) session {
	s.t.Helper()
	sess, err := s.tryLogin(context.Background(), codeAt, approveAt, pollAt, label)
	if err != nil {
		s.t.Fatalf("device login %q: %v", label, err)
	}
	return sess
}

// requestCode starts a device login and leaves it pending.
func (s *stack) requestCode(df *deviceflow, label string) {
	s.t.Helper()
	n := s.ip.Add(1)
	st, body := testenv.Do(context.Background(), http.MethodPost, df.base+"/openapi/v1/oauth/device/code", "",
		url.Values{"client_id": {"difyctl"}, "device_label": {label}},
		map[string]string{"X-Forwarded-For": fmt.Sprintf("10.200.%d.%d", n/256%256, n%256)})
	if st != http.StatusOK {
		s.t.Fatalf("device code: %d %s", st, body)
	}
}

// approve approves a user code with a Dify console session of the fixture's account.
func approve(ctx context.Context, df *deviceflow, userCode string) (int, []byte) {
	body, _ := json.Marshal(map[string]string{"user_code": userCode})
	h := testenv.ConsoleSession(secretKey, accountID)
	h["Content-Type"] = "application/json"
	return testenv.Do(ctx, http.MethodPost, df.base+"/openapi/v1/oauth/device/approve", "", body, h)
}

// sessionIDs lists the caller's live sessions through GET /account/sessions: their ids, and the one marked current.
func sessionIDs(t *testing.T, df *deviceflow, token string) (ids []string, current string) {
	t.Helper()
	st, body := testenv.Do(context.Background(), http.MethodGet, df.base+"/openapi/v1/account/sessions", token, nil, nil)
	if st != http.StatusOK {
		t.Fatalf("GET /account/sessions: %d %s", st, body)
	}
	var page struct {
		Data []struct {
			ID      string `json:"id"`
			Current bool   `json:"current"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("GET /account/sessions: %v: %s", err, body)
	}
	for _, s := range page.Data {
		ids = append(ids, s.ID)
		if s.Current {
			current = s.ID
		}
	}
	return ids, current
}

// --- retention -------------------------------------------------------------------------------------------------------

// seedExpired writes n tokens that expired long before the retention window, for a pruner to delete, and returns their ids.
func (s *stack) seedExpired(n int) []string {
	s.t.Helper()
	store := postgres.NewTokenStore(s.pool)
	now := time.Now()
	var ids []string
	for i := range n {
		plain, err := tokens.Generate(tokens.Account)
		if err != nil {
			s.t.Fatal(err)
		}
		m, err := store.Mint(context.Background(), tokens.MintRequest{
			Subject: tokens.AccountSubject(accountID, email), ClientID: "difyctl", DeviceLabel: fmt.Sprintf("old-%d", i),
			Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(plain),
			Now: now.Add(-100 * 24 * time.Hour), ExpiresAt: now.Add(-90 * 24 * time.Hour)})
		if err != nil {
			s.t.Fatal(err)
		}
		ids = append(ids, m.Token.ID)
	}
	return ids
}

// remaining counts which of ids are still rows of oauth_access_tokens.
func (s *stack) remaining(ids []string) int {
	s.t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM oauth_access_tokens WHERE id::text = ANY($1)`,
		ids).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// holdRow locks one of the rows a pruner must delete, in a transaction of the test's own, so the pruner that holds the
// retention lock blocks on it until release: two pruners are then certain to overlap. release is idempotent.
func (s *stack) holdRow(id string) (release func()) {
	s.t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM oauth_access_tokens WHERE id = $1 FOR UPDATE`, id); err != nil {
		s.t.Fatal(err)
	}
	var once atomic.Bool
	release = func() {
		if once.CompareAndSwap(false, true) {
			_ = tx.Rollback(ctx)
		}
	}
	s.t.Cleanup(release)
	return release
}

// pruneLockHeld reports whether some session holds the retention prune's advisory lock in this database.
func (s *stack) pruneLockHeld() bool {
	s.t.Helper()
	var held bool
	if err := s.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((classid::bigint << 32) | objid::bigint) = $1)`, postgres.PruneLockKey).Scan(&held); err != nil {
		s.t.Fatal(err)
	}
	return held
}
