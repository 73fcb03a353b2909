package extauthz

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/testenv"
	"github.com/authgate/authgate/internal/tokens"
)

// countingTokens counts the uses that reach the store, per token.
type countingTokens struct {
	tokens.Store
	mu    sync.Mutex
	perID map[string]int
}

func (c *countingTokens) RecordLastUsed(ctx context.Context, uses []tokens.Use) (int, error) {
	c.mu.Lock()
	for _, u := range uses {
		c.perID[u.TokenID]++
	}
	c.mu.Unlock()
	return c.Store.RecordLastUsed(ctx, uses)
}

func (c *countingTokens) writes(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.perID[id]
}

func mintExternal(t *testing.T, st tokens.Store, device string) (plain string, tok tokens.Token) {
	t.Helper()
	plain, err := tokens.Generate(tokens.ExternalSSO)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m, err := st.Mint(context.Background(), tokens.MintRequest{
		Subject: tokens.ExternalSubject("ext@example.com", "https://idp.example.com"), ClientID: "difyctl",
		DeviceLabel: device, Prefix: tokens.ExternalSSO.Prefix, TokenHash: tokens.Hash(plain),
		Now: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return plain, m.Token
}

// TestCheckRecordsOnlyAllowedTokens: the token id of an allow is noted; a deny, and an allow without a token (a route
// with auth: none), note nothing.
func TestCheckRecordsOnlyAllowedTokens(t *testing.T) {
	pool := testenv.Postgres(t)
	store := &countingTokens{Store: postgres.NewTokenStore(pool), perID: map[string]int{}}
	_, allowed := mintExternal(t, store, "allowed")
	_, denied := mintExternal(t, store, "denied")
	rec, err := lastused.New(store, lastused.Options{Interval: time.Minute, FlushEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(d pipeline.Decision) {
		srv := NewServer(fixedChecker(d), slog.New(slog.DiscardHandler), 0)
		srv.lastUsed = rec
		srv.roundTrip(t, envoyRequest("GET", "/openapi/v1/me", nil, "10.0.0.1"))
	}
	serve(pipeline.Decision{Allow: true, SetHeaders: []pipeline.Header{
		{Name: pipeline.HeaderSubjectType, Value: "external_sso"}, {Name: pipeline.HeaderTokenID, Value: allowed.ID}}})
	serve(pipeline.Decision{Status: 403, Code: pipeline.CodeInsufficientScope,
		Metadata: map[string]string{"token_id": denied.ID}})
	serve(pipeline.Decision{Allow: true, Route: "health"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if store.writes(allowed.ID) != 1 || store.writes(denied.ID) != 0 || len(store.perID) != 1 {
		t.Fatalf("uses written %v; want one, of the allowed token %s", store.perID, allowed.ID)
	}
	var used *time.Time
	if err := pool.QueryRow(ctx, `SELECT last_used_at FROM oauth_access_tokens WHERE id = $1`, allowed.ID).Scan(&used); err != nil ||
		used == nil {
		t.Fatalf("allowed token's last_used_at = %v, %v", used, err)
	}
}

// TestThousandChecksWriteOnce: a thousand allowed Checks of one token, through the service as Envoy calls it, write its
// last_used_at once (the interval is the default five minutes); Shutdown writes what was still pending.
func TestThousandChecksWriteOnce(t *testing.T) {
	pool := testenv.Postgres(t)
	store := &countingTokens{Store: postgres.NewTokenStore(pool), perID: map[string]int{}}
	plain, tok := mintExternal(t, store, "laptop")
	vars := map[string]string{"DATABASE_URL": pool.Config().ConnString(), "REDIS_URL": testenv.RedisURL(t),
		"OPENAPI_RATE_LIMIT_PER_TOKEN": "0", "CHECK_TIMEOUT": "4s", "SHUTDOWN_DRAIN_DELAY": "0"}
	cfg, _, err := config.LoadExtauthz(func(name string) (string, bool) { v, ok := vars[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.Setup(context.Background(), "extauthz-test", telemetry.Config{LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Start(context.Background(), cfg, Deps{Tokens: store, Directory: postgres.NewDirectory(pool),
		Redis: testenv.Redis(t), Telemetry: tel}, grpcLn, adminLn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	first := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := client.Check(ctx, envoyRequest("GET", "/openapi/v1/me",
					map[string]string{"authorization": "Bearer " + plain}, "10.0.0.1"))
				cancel()
				if err != nil || resp.GetOkResponse() == nil {
					t.Errorf("Check: %v, %v", resp.GetDeniedResponse(), err)
					return
				}
			}
		})
	}
	wg.Wait()
	_ = conn.Close() // the way Envoy leaves: GracefulStop waits for its connections
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := store.writes(tok.ID); n != 1 {
		t.Fatalf("1000 Checks wrote last_used_at %d times, want once", n)
	}
	var used *time.Time
	if err := pool.QueryRow(ctx, `SELECT last_used_at FROM oauth_access_tokens WHERE id = $1`, tok.ID).Scan(&used); err != nil ||
		used == nil || used.Before(first.Truncate(time.Microsecond)) {
		t.Fatalf("last_used_at = %v, %v; want the first Check's time, at or after %v", used, err, first)
	}
}
