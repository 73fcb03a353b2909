package deviceflow

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/audit"
	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

const flowSecret = "flow-test-secret-key"

// Directory of the account-branch tests: Ann is in two workspaces (the second one current), Bob in one, Ben is banned.
var (
	flowAlpha = directory.Tenant{ID: "0a000000-0000-4000-8000-000000000001", Name: "Alpha", Status: directory.TenantStatusNormal}
	flowBeta  = directory.Tenant{ID: "0a000000-0000-4000-8000-000000000002", Name: "Beta", Status: directory.TenantStatusNormal}
	flowAnn   = directory.Account{ID: "0a000000-0000-4000-8000-0000000000a1", Email: "Ann@Example.com", Name: "Ann",
		Status: directory.AccountStatusActive}
	flowBob = directory.Account{ID: "0a000000-0000-4000-8000-0000000000b1", Email: "bob@example.com", Name: "Bob",
		Status: directory.AccountStatusActive}
	flowBen = directory.Account{ID: "0a000000-0000-4000-8000-0000000000c1", Email: "ben@example.com", Name: "Ben",
		Status: directory.AccountStatusBanned}
	flowFixture = dirfixture.Fixture{
		Tenants:  []directory.Tenant{flowAlpha, flowBeta},
		Accounts: []directory.Account{flowAnn, flowBob, flowBen},
		Joins: []dirfixture.Join{
			{TenantID: flowAlpha.ID, AccountID: flowAnn.ID, Role: "owner"},
			{TenantID: flowBeta.ID, AccountID: flowAnn.ID, Role: "editor", Current: true},
			{TenantID: flowAlpha.ID, AccountID: flowBob.ID, Role: "normal"},
		},
	}
)

// flowClock is the server's clock: real time until a test fixes it.
type flowClock struct {
	mu    sync.Mutex
	fixed time.Time
}

func (c *flowClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fixed.IsZero() {
		return time.Now()
	}
	return c.fixed
}

func (c *flowClock) Set(t time.Time) { c.mu.Lock(); c.fixed = t; c.mu.Unlock() }

func (c *flowClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// flowLogs collects the server's log lines.
type flowLogs struct{ testenv.LogBuffer }

// events returns the audit events logged so far, in order.
func (l *flowLogs) events() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["audit"] == true {
			out = append(out, m)
		}
	}
	return out
}

func (l *flowLogs) count(event audit.Event) int {
	n := 0
	for _, e := range l.events() {
		if e["event"] == string(event) {
			n++
		}
	}
	return n
}

// flowEnv is a deviceflow server on a real listener over real Postgres and Redis.
type flowEnv struct {
	t     *testing.T
	url   string
	srv   *Server
	rdb   *redis.Client
	pool  *pgxpool.Pool
	store tokens.Store
	clock *flowClock
	logs  *flowLogs
	cfg   Config
	http  *http.Client
}

func newFlowEnv(t *testing.T, tweak func(*Config)) *flowEnv {
	t.Helper()
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, flowFixture)
	rdb := testenv.Redis(t)
	cfg := Config{
		SecretKey:      flowSecret,
		ConsoleWebURL:  "http://console.test",
		ConsoleAPIURL:  "http://api.test",
		KnownClientIDs: []string{"difyctl", "other-cli"},
		ApprovePerHour: 10,
		TTL:            tokens.TTLPolicy{Days: 14},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e := &flowEnv{t: t, rdb: rdb, pool: pool, store: postgres.NewTokenStore(pool), clock: &flowClock{}, logs: &flowLogs{}, cfg: cfg}
	srv, err := New(Deps{
		Tokens:    e.store,
		Directory: postgres.NewDirectory(pool),
		Redis:     rdb,
		Limiter:   ratelimit.NewSlidingWindow(rdb),
		Revoker:   tokencache.NewRevoker(rdb, time.Minute),
		Logger:    slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       e.clock.Now,
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	e.http = ts.Client()
	return e
}

// flowResp is a decoded response.
type flowResp struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r flowResp) str(name string) string { s, _ := r.Body[name].(string); return s }

// reqOpt changes a request before it is sent.
type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func withCookies(cs ...*http.Cookie) reqOpt {
	return func(r *http.Request) {
		for _, c := range cs {
			r.AddCookie(c)
		}
	}
}

func withBasic(user, secret string) reqOpt {
	return func(r *http.Request) { r.SetBasicAuth(user, secret) }
}

func withBearer(token string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

func (e *flowEnv) do(method, path, contentType string, body io.Reader, opts ...reqOpt) flowResp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, o := range opts {
		o(req)
	}
	res, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := flowResp{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func (e *flowEnv) postJSON(path string, v any, opts ...reqOpt) flowResp {
	e.t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(http.MethodPost, apiPrefix+path, "application/json", bytes.NewReader(raw), opts...)
}

func (e *flowEnv) postForm(path string, v url.Values, opts ...reqOpt) flowResp {
	e.t.Helper()
	return e.do(http.MethodPost, apiPrefix+path, "application/x-www-form-urlencoded", strings.NewReader(v.Encode()), opts...)
}

func (e *flowEnv) get(path string, opts ...reqOpt) flowResp {
	e.t.Helper()
	return e.do(http.MethodGet, apiPrefix+path, "", nil, opts...)
}

// wantErr asserts a JSON error answer.
func wantErr(t *testing.T, r flowResp, status int, code string) {
	t.Helper()
	if r.Status != status || r.str("error") != code || r.str("message") == "" {
		t.Fatalf("got %d %s, want %d {error: %s, message: ...}", r.Status, r.Raw, status, code)
	}
	if r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("error Content-Type %q", r.Header.Get("Content-Type"))
	}
}

// issue starts a device authorization as Dify's CLI does (JSON).
func (e *flowEnv) issue(label string, opts ...reqOpt) (deviceCode, userCode string) {
	e.t.Helper()
	body := map[string]string{"client_id": "difyctl"}
	if label != "" {
		body["device_label"] = label
	}
	r := e.postJSON("/oauth/device/code", body, opts...)
	if r.Status != http.StatusOK {
		e.t.Fatalf("device code: %d %s", r.Status, r.Raw)
	}
	return r.str("device_code"), r.str("user_code")
}

// signHS256 signs claims with key (the console's SECRET_KEY in the good case).
func signHS256(t testing.TB, key string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// console is a Dify console session: the cookies a signed-in browser sends and its CSRF header.
type console struct {
	cookies []*http.Cookie
	csrf    string
}

func (c console) opts() []reqOpt {
	return []reqOpt{withCookies(c.cookies...), withHeader("X-CSRF-Token", c.csrf)}
}

// consoleFor signs a valid session for the account as Dify's login does.
func (e *flowEnv) consoleFor(accountID string) console {
	exp := e.clock.Now().Add(time.Hour).Unix()
	passport := signHS256(e.t, flowSecret, jwt.MapClaims{"user_id": accountID, "exp": exp, "iss": "SELF_HOSTED",
		"sub": consolePassportSubject})
	csrf := signHS256(e.t, flowSecret, jwt.MapClaims{"user_id": accountID, "exp": exp})
	return console{
		cookies: []*http.Cookie{{Name: e.srv.consoleCookieName("access_token"), Value: passport},
			{Name: e.srv.consoleCookieName("csrf_token"), Value: csrf}},
		csrf: csrf,
	}
}

func (e *flowEnv) approve(userCode string, c console) flowResp {
	e.t.Helper()
	return e.postJSON("/oauth/device/approve", map[string]string{"user_code": userCode}, c.opts()...)
}

func (e *flowEnv) pollJSON(deviceCode string, opts ...reqOpt) flowResp {
	e.t.Helper()
	return e.postJSON("/oauth/device/token", map[string]string{"client_id": "difyctl", "device_code": deviceCode}, opts...)
}

// login runs the whole account flow and returns the token.
func (e *flowEnv) login(acct directory.Account, label string) flowResp {
	e.t.Helper()
	dc, uc := e.issue(label)
	if r := e.approve(uc, e.consoleFor(acct.ID)); r.Status != http.StatusOK {
		e.t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	r := e.pollJSON(dc)
	if r.Status != http.StatusOK {
		e.t.Fatalf("poll: %d %s", r.Status, r.Raw)
	}
	return r
}

// tombstoned reports whether the token cache holds a revocation tombstone for hash.
func (e *flowEnv) tombstoned(hash string) bool {
	v, err := e.rdb.Get(context.Background(), "auth:token:"+hash).Result()
	return err == nil && v == "invalid"
}
