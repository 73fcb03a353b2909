package deviceflow

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

func TestMintFailureKeepsTheApprovalForTheNextPoll(t *testing.T) {
	e := newFlowEnv(t, nil)
	dc, uc := e.issue("")
	if r := e.approve(uc, e.consoleFor(flowAnn.ID)); r.Status != http.StatusOK {
		t.Fatal(r.Raw)
	}
	// A real Postgres fault: the table is briefly missing.
	if _, err := e.pool.Exec(t.Context(), `ALTER TABLE oauth_access_tokens RENAME TO oauth_access_tokens_away`); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.pollJSON(dc), http.StatusServiceUnavailable, "temporarily_unavailable")
	if _, err := e.pool.Exec(t.Context(), `ALTER TABLE oauth_access_tokens_away RENAME TO oauth_access_tokens`); err != nil {
		t.Fatal(err)
	}
	r := e.pollJSON(dc)
	if r.Status != http.StatusOK || !accountTokenRE.MatchString(r.str("token")) {
		t.Fatalf("poll after recovery: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "expired_token")
}

func TestAccountBannedAfterApprovalGetsNoToken(t *testing.T) {
	e := newFlowEnv(t, nil)
	dc, uc := e.issue("")
	if r := e.approve(uc, e.consoleFor(flowBob.ID)); r.Status != http.StatusOK {
		t.Fatal(r.Raw)
	}
	if _, err := e.pool.Exec(t.Context(), `UPDATE accounts SET status = 'banned' WHERE id = $1`, flowBob.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, "access_denied")
	if _, total, _ := e.store.ListLive(t.Context(), tokens.AccountSubject(flowBob.ID, flowBob.Email), time.Now(), tokens.Page{Page: 1, Limit: 5}); total != 0 {
		t.Fatal("a token was minted for a banned account")
	}
}

func TestRedisDownAnswers503(t *testing.T) {
	pool := testenv.Postgres(t)
	testenv.SeedDirectory(t, pool, flowFixture)
	redisSrv := testenv.StartRedisServer(t)
	rdb := redisSrv.Client()
	store := postgres.NewTokenStore(pool)
	srv, err := New(Deps{Tokens: store, Directory: postgres.NewDirectory(pool), Redis: rdb,
		Limiter: ratelimit.NewSlidingWindow(rdb), Revoker: tokencache.NewRevoker(rdb, time.Minute),
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))},
		Config{SecretKey: flowSecret, ConsoleWebURL: "http://c", ConsoleAPIURL: "http://a", KnownClientIDs: []string{"difyctl"},
			TTL: tokens.TTLPolicy{Days: 14}})
	if err != nil {
		t.Fatal(err)
	}
	redisSrv.Stop()
	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodPost, apiPrefix+"/oauth/device/code", strings.NewReader(`{"client_id":"difyctl"}`)),
		httptest.NewRequest(http.MethodPost, apiPrefix+"/oauth/device/token", strings.NewReader(`{"client_id":"difyctl","device_code":"dc_x"}`)),
		httptest.NewRequest(http.MethodGet, apiPrefix+"/oauth/device/lookup?user_code=BBBB-BBBB", nil),
	} {
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"error":"temporarily_unavailable"`) {
			t.Fatalf("%s with Redis down: %d %s", req.URL.Path, rec.Code, rec.Body.String())
		}
	}
}
