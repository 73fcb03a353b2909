package deviceflow

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/enterprise/enterprisetest"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// Directory content of the SSO and page tests.
var (
	webTenant  = directory.Tenant{ID: "6b3c1d2e-0000-4000-8000-000000000001", Name: "Acme", Status: directory.TenantStatusNormal}
	webAccount = directory.Account{ID: "6b3c1d2e-0000-4000-8000-0000000000a1", Email: "Dify.User@example.com",
		Name: "Dify User", Status: directory.AccountStatusActive}
	webFixture = dirfixture.Fixture{
		Tenants:  []directory.Tenant{webTenant},
		Accounts: []directory.Account{webAccount},
		Joins:    []dirfixture.Join{{TenantID: webTenant.ID, AccountID: webAccount.ID, Role: "owner", Current: true}},
	}
)

// webHarness is a deviceflow server over real Postgres and Redis with a fake enterprise service.
type webHarness struct {
	t       testing.TB
	srv     *Server
	handler http.Handler
	rdb     *redis.Client
	ent     *enterprisetest.Server
	cfg     Config
	logs    *testenv.LogBuffer
	pool    *pgxpool.Pool
}

// webOption adds to a webHarness's dependencies before the server is built (its directory is already seeded).
type webOption func(*Deps, *pgxpool.Pool)

func newWebHarness(t testing.TB, enterpriseEnabled bool, tweak func(*Config), opts ...webOption) *webHarness {
	t.Helper()
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, webFixture)
	rdb := testenv.Redis(t)
	ent := enterprisetest.NewServer(t)
	cfg := Config{
		SecretKey:         testSecretKey,
		ConsoleWebURL:     "http://console.example",
		ConsoleAPIURL:     "http://api.example",
		KnownClientIDs:    []string{"difyctl"},
		ApprovePerHour:    10,
		TTL:               tokens.TTLPolicy{Days: 14},
		EnterpriseEnabled: enterpriseEnabled,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	logs := &testenv.LogBuffer{}
	deps := Deps{
		Tokens:    postgres.NewTokenStore(pool),
		Directory: postgres.NewDirectory(pool),
		Redis:     rdb,
		Limiter:   ratelimit.NewSlidingWindow(rdb),
		Revoker:   tokencache.NewRevoker(rdb, time.Minute),
		Logger:    slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if enterpriseEnabled {
		deps.Enterprise = enterprise.New(ent.URL(), ent.SecretKey(), enterprise.Options{})
	}
	for _, o := range opts {
		o(&deps, pool)
	}
	srv, err := New(deps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &webHarness{t: t, srv: srv, handler: srv.Handler(), rdb: rdb, ent: ent, cfg: cfg, logs: logs, pool: pool}
}

// do sends one request through the handler; cookies are attached as given.
func (h *webHarness) do(method, target string, body any, header http.Header, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, target, rd)
	req.RemoteAddr = "192.0.2.10:51000"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	return rec
}

// issue starts a device authorization through the API, as a CLI would.
func (h *webHarness) issue() (deviceCode, userCode string) {
	h.t.Helper()
	rec := h.do("POST", "/openapi/v1/oauth/device/code", map[string]string{"client_id": "difyctl", "device_label": "laptop"}, nil)
	if rec.Code != http.StatusOK {
		h.t.Fatalf("device code: %d %s", rec.Code, rec.Body)
	}
	var out struct {
		DeviceCode string `json:"device_code"`
		UserCode   string `json:"user_code"`
	}
	decodeInto(h.t, rec, &out)
	return out.DeviceCode, out.UserCode
}

// poll asks for the token once.
func (h *webHarness) poll(deviceCode string) (int, map[string]any) {
	h.t.Helper()
	rec := h.do("POST", "/openapi/v1/oauth/device/token", map[string]string{"client_id": "difyctl", "device_code": deviceCode}, nil)
	var out map[string]any
	decodeInto(h.t, rec, &out)
	return rec.Code, out
}

// assertion signs an external-subject assertion as the enterprise service would.
func (h *webHarness) assertion(email, userCode, nonce string) string {
	h.t.Helper()
	now := time.Now()
	return signRaw(h.t, jwt.SigningMethodHS256, []byte(testSecretKey), envelopeKeyID, jwt.MapClaims{
		"aud": audExternalSubjectAssertion, "iat": now.Unix(), "exp": now.Add(90 * time.Second).Unix(),
		"email": email, "issuer": "https://idp.partner.example", "user_code": userCode, "nonce": nonce,
	})
}

// completeSSO runs sso-complete and returns the grant cookie it set.
func (h *webHarness) completeSSO(email, userCode string) *http.Cookie {
	h.t.Helper()
	rec := h.do("GET", "/openapi/v1/oauth/device/sso-complete?sso_assertion="+url.QueryEscape(h.assertion(email, userCode, newSSONonce())), nil, nil)
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != h.cfg.ConsoleWebURL+"/device?sso_verified=1" {
		h.t.Fatalf("sso-complete: %d %q %s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	c := cookieNamed(rec, approvalGrantCookieName)
	if c == nil || c.Value == "" {
		h.t.Fatal("sso-complete set no grant cookie")
	}
	return c
}

func cookieNamed(rec *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range rec.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func decodeInto(t testing.TB, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("status %d, body %q is not JSON: %v", rec.Code, rec.Body.String(), err)
	}
}

// wantError checks a JSON error answer.
func wantError(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	var out struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if rec.Code != status || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Error != code || out.Message == "" {
		t.Fatalf("got %d %s, want %d %q", rec.Code, strings.TrimSpace(rec.Body.String()), status, code)
	}
}

func csrfHeaderOf(token string) http.Header { return http.Header{"X-Csrf-Token": {token}} }

// grantOf reads the claims of a grant cookie minted by the server.
func (h *webHarness) grantOf(c *http.Cookie) approvalGrant {
	h.t.Helper()
	g, err := h.srv.envelopes().verifyGrant(c.Value)
	if err != nil {
		h.t.Fatal(err)
	}
	return g
}
