package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// Directory fixture shared by the integration tests.
const (
	tenantMain     = "11111111-1111-4111-8111-111111111111"
	tenantArchived = "22222222-2222-4222-8222-222222222222"
	tenantMissing  = "33333333-3333-4333-8333-333333333333"
	tenantOther    = "44444444-4444-4444-8444-444444444444"

	accountActive    = "aaaaaaaa-0000-4000-8000-000000000001"
	accountBanned    = "aaaaaaaa-0000-4000-8000-000000000002"
	accountNotMember = "aaaaaaaa-0000-4000-8000-000000000003"

	appOK          = "bbbbbbbb-0000-4000-8000-000000000001"
	appAPIDisabled = "bbbbbbbb-0000-4000-8000-000000000002"
	appArchived    = "bbbbbbbb-0000-4000-8000-000000000003" // in an archived tenant
	appNoTenant    = "bbbbbbbb-0000-4000-8000-000000000004"
	appNotNormal   = "bbbbbbbb-0000-4000-8000-000000000005"
	appMissing     = "bbbbbbbb-0000-4000-8000-00000000ffff"
	appOther       = "bbbbbbbb-0000-4000-8000-000000000006" // in tenantOther

	externalIssuer = "https://idp.example.com"
)

var fixture = dirfixture.Fixture{
	Tenants: []directory.Tenant{
		{ID: tenantMain, Name: "main", Status: "normal"},
		{ID: tenantArchived, Name: "old", Status: "archive"},
		{ID: tenantOther, Name: "other", Status: "normal"},
	},
	Accounts: []directory.Account{
		{ID: accountActive, Email: "ada@example.com", Name: "Ada", Status: "active"},
		{ID: accountBanned, Email: "bob@example.com", Name: "Bob", Status: "banned"},
		{ID: accountNotMember, Email: "cy@example.com", Name: "Cy", Status: "active"},
	},
	Apps: []directory.App{
		{ID: appOK, TenantID: tenantMain, Name: "ok", Mode: "chat", Status: "normal", EnableAPI: true},
		{ID: appAPIDisabled, TenantID: tenantMain, Name: "noapi", Mode: "chat", Status: "normal", EnableAPI: false},
		{ID: appArchived, TenantID: tenantArchived, Name: "arch", Mode: "chat", Status: "normal", EnableAPI: true},
		{ID: appNoTenant, TenantID: tenantMissing, Name: "orphan", Mode: "chat", Status: "normal", EnableAPI: true},
		{ID: appNotNormal, TenantID: tenantMain, Name: "gone", Mode: "chat", Status: "archived", EnableAPI: true},
		{ID: appOther, TenantID: tenantOther, Name: "theirs", Mode: "chat", Status: "normal", EnableAPI: true},
	},
	Joins: []dirfixture.Join{
		{TenantID: tenantMain, AccountID: accountActive, Role: "owner", Current: true},
		{TenantID: tenantMain, AccountID: accountBanned, Role: "normal"},
	},
}

// world is the shared state of a test: one database, one Redis database, and any number of extauthz servers on them.
type world struct {
	t        testing.TB
	pool     *pgxpool.Pool
	dbURL    string
	redisURL string
	store    *postgres.TokenStore
	audit    *testenv.LogBuffer

	mu     sync.Mutex
	minted []string // every plaintext token this world minted: none may ever reach a log line
}

func newWorld(t testing.TB) *world {
	t.Helper()
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, fixture)
	w := &world{t: t, pool: pool, dbURL: pool.Config().ConnString(), redisURL: testenv.RedisURL(t),
		store: postgres.NewTokenStore(pool), audit: &testenv.LogBuffer{}}
	// Registered first, so it runs last: after every server of this world has shut down and logged its last line.
	t.Cleanup(func() { w.assertNoTokenLogged(t) })
	return w
}

// assertNoTokenLogged fails the test if any minted plaintext token appears anywhere in the logs (debug level included).
func (w *world) assertNoTokenLogged(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	logs := w.audit.String()
	for _, plain := range w.minted {
		if strings.Contains(logs, plain) || strings.Contains(logs, plain[5:]) {
			t.Errorf("a token (%s…) was logged", plain[:8])
		}
	}
}

// env builds an extauthz configuration the way the process does, from variables.
func (w *world) config(vars map[string]string) config.Extauthz {
	w.t.Helper()
	base := map[string]string{
		"DATABASE_URL":       w.dbURL,
		"REDIS_URL":          w.redisURL,
		"EXTAUTHZ_GRPC_ADDR": "127.0.0.1:0",
		"ADMIN_ADDR":         "127.0.0.1:0",
		// Generous for a shared 2-core machine under -race; the deadline tests set their own.
		"CHECK_TIMEOUT": "4s",
		// No proxy health-checks a test server: stop at once (the drain test sets its own).
		"SHUTDOWN_DRAIN_DELAY": "0",
	}
	for k, v := range vars {
		base[k] = v
	}
	cfg, _, err := config.LoadExtauthz(func(name string) (string, bool) { v, ok := base[name]; return v, ok })
	if err != nil {
		w.t.Fatalf("config: %v", err)
	}
	return cfg
}

// server is one running extauthz and a gRPC client on a real connection to it.
type server struct {
	app    *App
	client authv3.AuthorizationClient
}

func (w *world) start(vars map[string]string) *server {
	w.t.Helper()
	cfg := w.config(vars)
	tel, err := telemetry.Setup(context.Background(), "extauthz-test", telemetry.Config{LogLevel: "info"})
	if err != nil {
		w.t.Fatal(err)
	}
	// Debug level: a token must not leak even into the most verbose logs.
	tel.Logger = slog.New(slog.NewJSONHandler(w.audit, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app, err := Start(context.Background(), cfg, tel)
	if err != nil {
		w.t.Fatalf("start: %v", err)
	}
	w.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			w.t.Errorf("shutdown: %v", err)
		}
	})
	conn, err := grpc.NewClient(app.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { conn.Close() })
	return &server{app: app, client: authv3.NewAuthorizationClient(conn)}
}

// mint creates a live token in Postgres and returns its plaintext and id.
func (w *world) mint(kind tokens.Kind, subject tokens.Subject, expiresIn time.Duration) (string, string) {
	w.t.Helper()
	plain, err := tokens.Generate(kind)
	if err != nil {
		w.t.Fatal(err)
	}
	return plain, w.mintHash(kind.Prefix, subject, plain, expiresIn)
}

func (w *world) mintHash(prefix string, subject tokens.Subject, plain string, expiresIn time.Duration) string {
	w.t.Helper()
	w.mu.Lock()
	w.minted = append(w.minted, plain)
	w.mu.Unlock()
	now := time.Now()
	m, err := w.store.Mint(context.Background(), tokens.MintRequest{
		Subject: subject, ClientID: "difyctl", DeviceLabel: "device-" + tokens.Hash(plain)[:12], Prefix: prefix,
		TokenHash: tokens.Hash(plain), Now: now.Add(-time.Hour), ExpiresAt: now.Add(expiresIn),
	})
	if err != nil {
		w.t.Fatalf("mint: %v", err)
	}
	return m.Token.ID
}

func (w *world) accountToken(accountID, email string) (string, string) {
	return w.mint(tokens.Account, tokens.AccountSubject(accountID, email), 24*time.Hour)
}

func (w *world) externalToken(email string) (string, string) {
	return w.mint(tokens.ExternalSSO, tokens.ExternalSubject(email, externalIssuer), 24*time.Hour)
}

// checkRequest is shaped like what Envoy sends: pseudo-headers, lowercased headers, the query in the path.
func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "api.example.com", ":scheme": "https",
		"x-request-id": "req-1", "user-agent": "difyctl/1.0", "x-forwarded-proto": "https"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "198.51.100.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50312}},
		}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.2", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-1", Method: method, Path: path, Host: "api.example.com", Scheme: "https", Protocol: "HTTP/2",
			Headers: h,
		}},
	}}
}

func bearer(token string) map[string]string {
	return map[string]string{"authorization": "Bearer " + token}
}

func (s *server) check(t testing.TB, method, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.client.Check(ctx, checkRequest(method, path, headers))
	if err != nil {
		t.Fatalf("Check %s %s returned a gRPC error: %v", method, path, err)
	}
	return resp
}

// expectDeny asserts the deny's rpc status, HTTP status, body and headers exactly (extra maps header -> value).
func expectDeny(t *testing.T, resp *authv3.CheckResponse, status int, code pipeline.Code, extra map[string]string) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("want deny %d %s, got %v", status, code, resp)
	}
	wantRPC := map[int]codes.Code{400: codes.PermissionDenied, 401: codes.Unauthenticated, 403: codes.PermissionDenied,
		404: codes.PermissionDenied, 429: codes.ResourceExhausted, 503: codes.Unavailable}[status]
	if codes.Code(resp.GetStatus().GetCode()) != wantRPC {
		t.Errorf("rpc status %v, want %v", codes.Code(resp.GetStatus().GetCode()), wantRPC)
	}
	if int(d.GetStatus().GetCode()) != status {
		t.Errorf("http status %d, want %d (body %s)", d.GetStatus().GetCode(), status, d.GetBody())
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", d.GetBody(), err)
	}
	if body["error"] != string(code) {
		t.Errorf("error %v, want %s (body %s)", body["error"], code, d.GetBody())
	}
	if msg, _ := body["message"].(string); msg == "" {
		t.Errorf("no message in %s", d.GetBody())
	}
	wantKeys := 2
	if status == 429 {
		wantKeys = 3
		ms, _ := body["retry_after_ms"].(float64)
		if ms < 1000 || ms > 60000 {
			t.Errorf("retry_after_ms %v", body["retry_after_ms"])
		}
		// Retry-After is the same wait in whole seconds, rounded up.
		for _, h := range d.GetHeaders() {
			if h.GetHeader().GetKey() == "retry-after" && h.GetHeader().GetValue() != strconv.Itoa(int(math.Ceil(ms/1000))) {
				t.Errorf("retry-after %q disagrees with retry_after_ms %v", h.GetHeader().GetValue(), ms)
			}
		}
	}
	if len(body) != wantKeys {
		t.Errorf("body %s has unexpected fields", d.GetBody())
	}
	got := map[string]string{}
	for _, h := range d.GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("deny header %s append_action %v", h.GetHeader().GetKey(), h.GetAppendAction())
		}
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	want := map[string]string{"content-type": "application/json"}
	for k, v := range extra {
		want[k] = v
	}
	for k, v := range want {
		if v == "*" {
			if got[k] == "" {
				t.Errorf("deny header %s missing", k)
			}
			continue
		}
		if got[k] != v {
			t.Errorf("deny header %s = %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected deny header %s: %q", k, got[k])
		}
	}
}

// expectAllow asserts the allow's identity headers exactly, each with OVERWRITE_IF_EXISTS_OR_ADD, and that every other
// x-authgate-* header is removed and none is both set and removed. It returns the removals.
func expectAllow(t *testing.T, resp *authv3.CheckResponse, want map[string]string) []string {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("want allow, got %v", resp)
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s append_action %v", h.GetHeader().GetKey(), h.GetAppendAction())
		}
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if len(got) != len(want) {
		t.Errorf("headers %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	removed := ok.GetHeadersToRemove()
	for _, name := range pipeline.IdentityHeaders {
		_, set := got[name]
		if set == slices.Contains(removed, name) {
			t.Errorf("%s: set=%v but removed=%v", name, set, !set)
		}
	}
	return removed
}

func accountHeaders(accountID, email, tokenID string) map[string]string {
	return map[string]string{
		pipeline.HeaderSubjectType:   "account",
		pipeline.HeaderSubjectEmail:  email,
		pipeline.HeaderSubjectIssuer: "dify:account",
		pipeline.HeaderAccountID:     accountID,
		pipeline.HeaderTokenID:       tokenID,
		pipeline.HeaderClientID:      "difyctl",
		pipeline.HeaderScopes:        "full",
	}
}

func externalHeaders(email, tokenID string) map[string]string {
	return map[string]string{
		pipeline.HeaderSubjectType:   "external_sso",
		pipeline.HeaderSubjectEmail:  email,
		pipeline.HeaderSubjectIssuer: externalIssuer,
		pipeline.HeaderTokenID:       tokenID,
		pipeline.HeaderClientID:      "difyctl",
		pipeline.HeaderScopes:        "apps:run apps:read:permitted apps:read:permitted-external",
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

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
