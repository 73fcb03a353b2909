package deviceflow

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

func TestMeDescribesTheCaller(t *testing.T) {
	e := newFlowEnv(t, nil)
	login := e.login(flowAnn, "laptop")
	r := e.get("/me", withBearer(login.str("token")))
	if r.Status != http.StatusOK || r.str("subject_type") != "account" || r.str("token_id") != login.str("token_id") ||
		r.str("client_id") != "difyctl" || r.str("default_workspace_id") != flowBeta.ID || r.str("subject_issuer") != "dify:account" {
		t.Fatalf("/me: %d %s", r.Status, r.Raw)
	}
	if r.Body["account"].(map[string]any)["id"] != flowAnn.ID || len(r.Body["workspaces"].([]any)) != 2 {
		t.Fatalf("/me profile: %s", r.Raw)
	}
	for _, bad := range []reqOpt{nil, withBearer("dfoa_short"), withBearer("app-" + login.str("token")[5:]),
		withBearer(tamper(login.str("token"))), withBasic("difyctl", "")} {
		opts := []reqOpt{}
		if bad != nil {
			opts = append(opts, bad)
		}
		res := e.get("/me", opts...)
		wantErr(t, res, http.StatusUnauthorized, "invalid_token")
		if res.Header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
}

func TestExpiredTokenIsHardExpiredOnce(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	e.clock.Set(start)
	tok := e.login(flowAnn, "laptop").str("token")
	e.clock.Set(start.Add(15 * 24 * time.Hour))
	wantErr(t, e.get("/me", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
	wantErr(t, e.get("/me", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
	if n := e.logs.count(auditTokenExpired); n != 1 {
		t.Fatalf("oauth.token_expired logged %d times", n)
	}
	if !e.tombstoned(tokens.Hash(tok)) {
		t.Fatal("expired token not tombstoned")
	}
}

func TestSelfRevocation(t *testing.T) {
	for _, path := range []string{"/oauth/authorizations/self", "/account/sessions/self"} {
		t.Run(path, func(t *testing.T) {
			e := newFlowEnv(t, nil)
			tok := e.login(flowAnn, "laptop").str("token")
			keep := e.login(flowAnn, "desktop").str("token")
			r := e.do(http.MethodDelete, apiPrefix+path, "", nil, withBearer(tok))
			if r.Status != http.StatusNoContent || r.Raw != "" {
				t.Fatalf("revoke self: %d %q", r.Status, r.Raw)
			}
			wantErr(t, e.get("/me", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
			if !e.tombstoned(tokens.Hash(tok)) {
				t.Fatal("revoked token not tombstoned")
			}
			if r := e.get("/me", withBearer(keep)); r.Status != http.StatusOK {
				t.Fatal("the other session was revoked too")
			}
			// A retry (the client never got the first answer) is answered like the first; nothing is revoked twice.
			if r := e.do(http.MethodDelete, apiPrefix+path, "", nil, withBearer(tok)); r.Status != http.StatusNoContent || r.Raw != "" ||
				r.Header.Get("WWW-Authenticate") != "" {
				t.Fatalf("retried revoke self: %d %q", r.Status, r.Raw)
			}
			if e.logs.count(auditTokenRevoked) != 1 {
				t.Fatal("revocation not audited exactly once")
			}
		})
	}
}

func TestRevokeSessionByID(t *testing.T) {
	e := newFlowEnv(t, nil)
	ann := e.login(flowAnn, "laptop")
	annOther := e.login(flowAnn, "desktop")
	bob := e.login(flowBob, "laptop")
	del := func(id, as string) flowResp {
		return e.do(http.MethodDelete, apiPrefix+"/account/sessions/"+id, "", nil, withBearer(as))
	}
	wantErr(t, del(bob.str("token_id"), ann.str("token")), http.StatusNotFound, "not_found")
	if r := e.get("/me", withBearer(bob.str("token"))); r.Status != http.StatusOK {
		t.Fatal("another subject's session was revoked")
	}
	wantErr(t, del("0a000000-0000-4000-8000-00000000dead", ann.str("token")), http.StatusNotFound, "not_found")
	wantErr(t, del("not-a-uuid", ann.str("token")), http.StatusNotFound, "not_found")
	if r := del(annOther.str("token_id"), ann.str("token")); r.Status != http.StatusNoContent {
		t.Fatalf("own session: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.get("/me", withBearer(annOther.str("token"))), http.StatusUnauthorized, "invalid_token")
	if !e.tombstoned(tokens.Hash(annOther.str("token"))) {
		t.Fatal("not tombstoned")
	}
	// Deleting an own session that is already revoked is the outcome asked for.
	if r := del(annOther.str("token_id"), ann.str("token")); r.Status != http.StatusNoContent {
		t.Fatalf("own session, already revoked: %d %s", r.Status, r.Raw)
	}
	if e.logs.count(auditTokenRevoked) != 1 {
		t.Fatal("a session was revoked twice")
	}
}

func TestListSessions(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	var toks []flowResp
	for i, label := range []string{"one", "two", "three"} {
		e.clock.Set(start.Add(time.Duration(i) * time.Minute))
		toks = append(toks, e.login(flowAnn, label))
	}
	e.login(flowBob, "bob's")
	r := e.get("/account/sessions?limit=2", withBearer(toks[0].str("token")))
	if r.Status != http.StatusOK || r.Body["total"] != float64(3) || r.Body["page"] != float64(1) || r.Body["limit"] != float64(2) ||
		r.Body["has_more"] != true {
		t.Fatalf("page 1: %s", r.Raw)
	}
	data := r.Body["data"].([]any)
	first := data[0].(map[string]any)
	if len(data) != 2 || first["device_label"] != "three" || first["prefix"] != "dfoa_" || first["client_id"] != "difyctl" ||
		first["current"] != false || first["last_used_at"] != nil {
		t.Fatalf("page 1 data: %s", r.Raw)
	}
	r = e.get("/account/sessions?limit=2&page=2", withBearer(toks[0].str("token")))
	data = r.Body["data"].([]any)
	if r.Body["has_more"] != false || len(data) != 1 || data[0].(map[string]any)["current"] != true ||
		data[0].(map[string]any)["id"] != toks[0].str("token_id") {
		t.Fatalf("page 2: %s", r.Raw)
	}
	if r := e.get("/account/sessions?limit=1000", withBearer(toks[0].str("token"))); r.Body["limit"] != float64(100) {
		t.Fatalf("limit not clamped: %s", r.Raw)
	}
	if r := e.get("/account/sessions", withBearer(toks[0].str("token"))); r.Body["limit"] != float64(20) {
		t.Fatalf("default limit: %s", r.Raw)
	}
	wantErr(t, e.get("/account/sessions?page=0", withBearer(toks[0].str("token"))), http.StatusBadRequest, "invalid_request")
	wantErr(t, e.get("/account/sessions?limit=x", withBearer(toks[0].str("token"))), http.StatusBadRequest, "invalid_request")
}

func TestRFC7009Revocation(t *testing.T) {
	e := newFlowEnv(t, nil)
	tok := e.login(flowAnn, "laptop").str("token")
	revoke := func(v url.Values, opts ...reqOpt) flowResp { return e.postForm("/oauth/revoke", v, opts...) }

	// Another client's revocation request answers 200 and changes nothing.
	if r := revoke(url.Values{"token": {tok}, "client_id": {"other-cli"}}); r.Status != http.StatusOK {
		t.Fatalf("other client: %d %s", r.Status, r.Raw)
	}
	if r := e.get("/me", withBearer(tok)); r.Status != http.StatusOK {
		t.Fatal("another client revoked the token")
	}
	for _, v := range []url.Values{{"token": {tamper(tok)}, "client_id": {"difyctl"}},
		{"token": {"garbage"}, "client_id": {"difyctl"}, "token_type_hint": {"access_token"}}} {
		if r := revoke(v); r.Status != http.StatusOK {
			t.Fatalf("unknown token: %d %s", r.Status, r.Raw)
		}
	}
	wantErr(t, revoke(url.Values{"client_id": {"difyctl"}}), http.StatusBadRequest, "invalid_request")
	wantErr(t, revoke(url.Values{"token": {tok}, "client_id": {"stranger"}}), http.StatusBadRequest, "invalid_client")

	if r := revoke(url.Values{"token": {tok}}, withBasic("difyctl", "")); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.get("/me", withBearer(tok)), http.StatusUnauthorized, "invalid_token")
	if !e.tombstoned(tokens.Hash(tok)) {
		t.Fatal("not tombstoned")
	}
	if r := revoke(url.Values{"token": {tok}, "client_id": {"difyctl"}}); r.Status != http.StatusOK {
		t.Fatalf("second revoke: %d", r.Status)
	}
}

func TestAuthorizationServerMetadata(t *testing.T) {
	e := newFlowEnv(t, nil)
	for _, path := range []string{"/.well-known/oauth-authorization-server/openapi/v1", "/openapi/v1/.well-known/oauth-authorization-server"} {
		r := e.do(http.MethodGet, path, "", nil)
		if r.Status != http.StatusOK || r.str("issuer") != "http://api.test/openapi/v1" ||
			r.str("token_endpoint") != "http://api.test/openapi/v1/oauth/device/token" ||
			r.str("device_authorization_endpoint") != "http://api.test/openapi/v1/oauth/device/code" ||
			r.str("revocation_endpoint") != "http://api.test/openapi/v1/oauth/revoke" {
			t.Fatalf("%s: %d %s", path, r.Status, r.Raw)
		}
		if g := r.Body["grant_types_supported"].([]any); len(g) != 1 || g[0] != deviceCodeGrant {
			t.Fatalf("grant types %v", g)
		}
		if _, ok := r.Body["response_types_supported"].([]any); !ok {
			t.Fatal("response_types_supported (REQUIRED) missing")
		}
	}
}

func TestPruneRemovesExactlyTheRowsPastTheCutoff(t *testing.T) {
	e := newFlowEnv(t, nil)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	mint := func(label string, created, expires time.Time) tokens.Token {
		t.Helper()
		plain, _ := tokens.Generate(tokens.Account)
		m, err := e.store.Mint(ctx, tokens.MintRequest{Subject: tokens.AccountSubject(flowAnn.ID, flowAnn.Email), ClientID: "difyctl",
			DeviceLabel: label, Prefix: tokens.Account.Prefix, TokenHash: tokens.Hash(plain), Now: created, ExpiresAt: expires})
		if err != nil {
			t.Fatal(err)
		}
		return m.Token
	}
	revokeAt := func(tok tokens.Token, at time.Time) {
		t.Helper()
		if _, err := e.store.Revoke(ctx, tok.Subject(), tok.ID, at); err != nil {
			t.Fatal(err)
		}
	}
	revokedOld := mint("revoked-31d", now.Add(-40*day), now.Add(10*day))
	revokeAt(revokedOld, now.Add(-31*day))
	revokedRecent := mint("revoked-29d", now.Add(-40*day), now.Add(10*day))
	revokeAt(revokedRecent, now.Add(-29*day))
	expiredOld := mint("expired-31d", now.Add(-45*day), now.Add(-31*day))
	expiredRecent := mint("expired-29d", now.Add(-43*day), now.Add(-29*day))
	live := mint("live", now.Add(-time.Hour), now.Add(14*day))

	p := NewPruner(e.store, 30, e.srv.log, func() time.Time { return now })
	n, err := p.RunOnce(ctx)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	var left []string
	rows, err := e.pool.Query(ctx, `SELECT id::text FROM oauth_access_tokens ORDER BY device_label`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	want := map[string]bool{revokedRecent.ID: true, expiredRecent.ID: true, live.ID: true}
	if len(left) != 3 {
		t.Fatalf("%d rows left, want 3", len(left))
	}
	for _, id := range left {
		if !want[id] || id == revokedOld.ID || id == expiredOld.ID {
			t.Fatalf("wrong row survived: %s", id)
		}
	}
	if n, err := p.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second run pruned %d (%v)", n, err)
	}
}

// tamper changes the last character of a token: still well formed, but another token.
func tamper(tok string) string {
	last := byte('A')
	if tok[len(tok)-1] == 'A' {
		last = 'B'
	}
	return tok[:len(tok)-1] + string(last)
}
