package deviceflow

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/store/postgres"
	"github.com/authgate/authgate/internal/tokencache"
	"github.com/authgate/authgate/internal/tokens"
)

// lookupCounter counts the token lookups that reach the store.
type lookupCounter struct {
	tokens.Store
	byHash, revoked atomic.Int64
}

func (c *lookupCounter) LookupByHash(ctx context.Context, hash string) (tokens.Token, error) {
	c.byHash.Add(1)
	return c.Store.LookupByHash(ctx, hash)
}

func (c *lookupCounter) LookupRevoked(ctx context.Context, hash string) (tokens.RevokedHash, error) {
	c.revoked.Add(1)
	return c.Store.LookupRevoked(ctx, hash)
}

// TestRFC7009UnknownTokensSpendABudget: RFC 7009 takes no credential, so random tokens from one address are a flood of
// Postgres lookups. Each unknown token is charged to the address; once the budget is spent the address gets 429 before any
// lookup, a repeated unknown token is answered from memory, and a real revocation from another address still works.
func TestRFC7009UnknownTokensSpendABudget(t *testing.T) {
	e := newFlowEnv(t, func(c *Config) { c.TrustedProxyHops = 1 })
	tok := e.login(flowAnn, "laptop").str("token")

	counter := &lookupCounter{Store: e.store}
	srv, err := New(Deps{Tokens: counter, Directory: postgres.NewDirectory(e.pool), Redis: e.rdb,
		Limiter: ratelimit.NewSlidingWindow(e.rdb), Revoker: tokencache.NewRevoker(e.rdb, time.Minute),
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Now: e.clock.Now}, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL
	revoke := func(raw string, opts ...reqOpt) flowResp {
		return e.postForm("/oauth/revoke", url.Values{"token": {raw}, "client_id": {"difyctl"}}, opts...)
	}

	attacker := fromIP("203.0.113.9")
	var unknown []string
	refused := 0
	for i := range 100 {
		raw, err := tokens.Generate(tokens.Account)
		if err != nil {
			t.Fatal(err)
		}
		unknown = append(unknown, raw)
		r := revoke(raw, attacker)
		switch {
		case r.Status == http.StatusOK && refused == 0:
		case r.Status == http.StatusTooManyRequests:
			wantErr(t, r, http.StatusTooManyRequests, codeRateLimited)
			if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 ||
				secs > int(limitRevokeUnknown.window/time.Second) {
				t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
			}
			refused++
		default:
			t.Fatalf("random token %d: %d %s (after %d refusals)", i, r.Status, r.Raw, refused)
		}
	}
	if want := 100 - limitRevokeUnknown.n; refused != want {
		t.Fatalf("%d of 100 random tokens refused, want %d (a budget of %d)", refused, want, limitRevokeUnknown.n)
	}
	if n := counter.byHash.Load(); n != int64(limitRevokeUnknown.n) {
		t.Fatalf("%d token lookups for 100 random tokens, want %d: the refused ones must not reach Postgres", n, limitRevokeUnknown.n)
	}

	// The same unknown token again, from an address with budget left: answered from memory.
	bystander := fromIP("198.51.100.30")
	if r := revoke(unknown[0], bystander); r.Status != http.StatusOK {
		t.Fatalf("repeated unknown token: %d %s", r.Status, r.Raw)
	}
	if n := counter.byHash.Load(); n != int64(limitRevokeUnknown.n) {
		t.Fatalf("a repeated unknown token was looked up again (%d lookups)", n)
	}

	// A real revocation from another address is not affected by the flood.
	if r := revoke(tok, fromIP("198.51.100.20")); r.Status != http.StatusOK {
		t.Fatalf("real revocation from another address: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.get("/me", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
	if !e.tombstoned(tokens.Hash(tok)) {
		t.Fatal("the real revocation was not published")
	}
	// Retrying it finds the revocation record: a known token, charged to nobody.
	for range limitRevokeUnknown.n + 1 {
		if r := revoke(tok, bystander); r.Status != http.StatusOK {
			t.Fatalf("retried revocation: %d %s", r.Status, r.Raw)
		}
	}
}
