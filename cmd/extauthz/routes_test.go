package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/telemetry"
)

// TestPolicyAndPipelineCE runs one case per route row of docs/reference/routes.md and per outcome of docs/reference/check.md on the community edition.
func TestPolicyAndPipelineCE(t *testing.T) {
	w := newWorld(t)
	srv := w.start(nil)

	ada, adaID := w.accountToken(accountActive, "Ada@Example.com")
	cy, cyID := w.accountToken(accountNotMember, "cy@example.com")
	bob, _ := w.accountToken(accountBanned, "bob@example.com")
	ext, extID := w.externalToken("Eve@Partner.example")

	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	cyH := accountHeaders(accountNotMember, "cy@example.com", cyID)
	extH := externalHeaders("eve@partner.example", extID)
	withTenant := func(h map[string]string, tenant string) map[string]string {
		return with(h, pipeline.HeaderTenantID, tenant)
	}
	withApp := func(h map[string]string, app, tenant string) map[string]string {
		return with(h, pipeline.HeaderTenantID, tenant, pipeline.HeaderAppID, app)
	}
	const v1 = "/openapi/v1"
	invalidToken := map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`}

	type tc struct {
		name    string
		method  string
		path    string
		headers map[string]string
		allow   map[string]string // identity headers of an allow; nil = deny
		status  int
		code    pipeline.Code
		deny    map[string]string
	}
	var cases []tc

	// §3.1: auth: none rows are allowed without a bearer, and any client-sent identity header is stripped.
	for _, mp := range []string{"GET /_health", "GET /_version", "POST /oauth/device/code", "POST /oauth/device/token",
		"GET /oauth/device/lookup", "POST /oauth/device/approve", "POST /oauth/device/deny", "GET /oauth/device/sso-initiate", "POST /oauth/device/sso-initiate",
		"GET /oauth/device/sso-complete", "GET /device/sso-complete", "GET /oauth/device/approval-context",
		"POST /oauth/device/approve-external", "POST /oauth/device/deny-external", "POST /oauth/revoke",
		"GET /.well-known/oauth-authorization-server"} {
		m, p, _ := strings.Cut(mp, " ")
		cases = append(cases, tc{name: "none " + mp, method: m, path: v1 + p,
			headers: map[string]string{pipeline.HeaderAccountID: accountActive}, allow: map[string]string{}})
	}
	// §3.1: identity routes for both subject types.
	for _, mp := range []string{"GET /me", "GET /account", "GET /account/sessions", "DELETE /account/sessions/self",
		"DELETE /account/sessions/5e55e55e-0000-4000-8000-000000000001", "DELETE /oauth/authorizations/self"} {
		m, p, _ := strings.Cut(mp, " ")
		cases = append(cases,
			tc{name: "account " + mp, method: m, path: v1 + p, headers: bearer(ada), allow: adaH},
			tc{name: "external " + mp, method: m, path: v1 + p, headers: bearer(ext), allow: extH})
	}
	cases = append(cases,
		tc{name: "workspaces", method: "GET", path: v1 + "/workspaces", headers: bearer(ada), allow: adaH},
		tc{name: "workspaces external", method: "GET", path: v1 + "/workspaces", headers: bearer(ext), status: 403, code: pipeline.CodeWrongSurface},
		tc{name: "workspace member", method: "GET", path: v1 + "/workspaces/" + tenantMain, headers: bearer(ada), allow: withTenant(adaH, tenantMain)},
		tc{name: "workspace non-member", method: "GET", path: v1 + "/workspaces/" + tenantMain, headers: bearer(cy), status: 403, code: pipeline.CodeWorkspaceMembershipRevoked},
		tc{name: "workspace not uuid", method: "GET", path: v1 + "/workspaces/main", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidQuery},
		tc{name: "apps with workspace", method: "GET", path: v1 + "/apps?workspace_id=" + tenantMain + "&page=1", headers: bearer(ada), allow: withTenant(adaH, tenantMain)},
		tc{name: "apps without workspace", method: "GET", path: v1 + "/apps?page=1", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidQuery},
		tc{name: "apps other workspace", method: "GET", path: v1 + "/apps?workspace_id=" + tenantOther, headers: bearer(ada), status: 403, code: pipeline.CodeWorkspaceMembershipRevoked},
		tc{name: "apps external", method: "GET", path: v1 + "/apps?workspace_id=" + tenantMain, headers: bearer(ext), status: 403, code: pipeline.CodeWrongSurface},
		tc{name: "app info", method: "GET", path: v1 + "/apps/" + appOK + "/info", headers: bearer(ada), allow: withApp(adaH, appOK, tenantMain)},
		tc{name: "app describe", method: "GET", path: v1 + "/apps/" + appOK + "/describe", headers: bearer(ada), allow: withApp(adaH, appOK, tenantMain)},
		tc{name: "app describe non-member", method: "GET", path: v1 + "/apps/" + appOK + "/describe", headers: bearer(cy), status: 403, code: pipeline.CodeWorkspaceMembershipRevoked},
		tc{name: "app info external", method: "GET", path: v1 + "/apps/" + appOK + "/info", headers: bearer(ext), status: 403, code: pipeline.CodeWrongSurface},
		// Enterprise-only routes do not exist on CE.
		tc{name: "apps permitted on CE", method: "GET", path: v1 + "/apps/permitted", headers: bearer(ext), status: 404, code: pipeline.CodeRouteNotFound},
		tc{name: "permitted external on CE", method: "GET", path: v1 + "/permitted-external-apps", headers: bearer(ext), status: 404, code: pipeline.CodeRouteNotFound},
	)
	for _, mp := range []string{"POST /run", "POST /tasks/t-1/stop", "GET /tasks/t-1/events", "POST /files/upload",
		"GET /form/human_input/f-1", "POST /form/human_input/f-1", "POST /chat-messages", "POST /completion-messages",
		"POST /workflows/run"} {
		m, p, _ := strings.Cut(mp, " ")
		path := v1 + "/apps/" + appOK + p
		cases = append(cases,
			tc{name: "run account " + mp, method: m, path: path, headers: bearer(ada), allow: withApp(adaH, appOK, tenantMain)},
			tc{name: "run external on CE " + mp, method: m, path: path, headers: bearer(ext), status: 403, code: pipeline.CodeSubjectNoAppAccess})
	}

	// §3.2 outcomes, in pipeline order.
	cases = append(cases,
		// 1. Path.
		tc{name: "dot-dot", method: "GET", path: v1 + "/apps/../me", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "encoded dot-dot", method: "GET", path: v1 + "/apps/%2e%2e/me", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "double slash", method: "GET", path: "/openapi//v1/me", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "trailing slash", method: "GET", path: v1 + "/me/", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "encoded slash", method: "GET", path: v1 + "/apps%2F" + appOK + "/info", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "backslash", method: "GET", path: v1 + "\\me", status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "encoded backslash", method: "GET", path: v1 + "/%5Cme", status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "non-ascii", method: "GET", path: v1 + "/m\xc3\xa9", status: 400, code: pipeline.CodeInvalidPath},
		tc{name: "dot segment on none route", method: "GET", path: v1 + "/./_health", status: 400, code: pipeline.CodeInvalidPath},
		// 2. Route.
		tc{name: "unknown route", method: "GET", path: v1 + "/admin", headers: bearer(ada), status: 404, code: pipeline.CodeRouteNotFound},
		tc{name: "wrong method", method: "PUT", path: v1 + "/me", headers: bearer(ada), status: 404, code: pipeline.CodeRouteNotFound},
		tc{name: "outside prefix", method: "GET", path: "/console/api/me", headers: bearer(ada), status: 404, code: pipeline.CodeRouteNotFound},
		tc{name: "HEAD matches GET", method: "HEAD", path: v1 + "/me", headers: bearer(ada), allow: adaH},
		tc{name: "CORS preflight", method: "OPTIONS", path: v1 + "/apps/" + appOK + "/run",
			headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "POST"}, allow: map[string]string{}},
		tc{name: "CORS preflight unknown route", method: "OPTIONS", path: v1 + "/nope",
			headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "GET"}, status: 404, code: pipeline.CodeRouteNotFound},
		tc{name: "OPTIONS without preflight headers", method: "OPTIONS", path: v1 + "/me", headers: bearer(ada), status: 404, code: pipeline.CodeRouteNotFound},
		// 4. Query.
		tc{name: "workspace_id twice", method: "GET", path: v1 + "/apps?workspace_id=" + tenantMain + "&workspace_id=" + tenantOther, headers: bearer(ada), status: 400, code: pipeline.CodeInvalidQuery},
		tc{name: "workspace_id encoded name", method: "GET", path: v1 + "/apps?workspace%5Fid=" + tenantMain, headers: bearer(ada), status: 400, code: pipeline.CodeInvalidQuery},
		tc{name: "workspace_id not uuid", method: "GET", path: v1 + "/apps?workspace_id=main", headers: bearer(ada), status: 400, code: pipeline.CodeInvalidQuery},
		// 5. Bearer.
		tc{name: "no authorization", method: "GET", path: v1 + "/me", status: 401, code: pipeline.CodeBearerRequired,
			deny: map[string]string{"www-authenticate": `Bearer realm="api"`}},
		tc{name: "basic scheme", method: "GET", path: v1 + "/me", headers: map[string]string{"authorization": "Basic dXNlcjpwYXNz"},
			status: 401, code: pipeline.CodeBearerRequired, deny: map[string]string{"www-authenticate": `Bearer realm="api"`}},
		tc{name: "lower-case scheme", method: "GET", path: v1 + "/me", headers: map[string]string{"authorization": "bearer " + ada}, allow: adaH},
		tc{name: "upper-case scheme", method: "GET", path: v1 + "/me", headers: map[string]string{"authorization": "BEARER " + ada}, allow: adaH},
		tc{name: "two tokens", method: "GET", path: v1 + "/me", headers: map[string]string{"authorization": "Bearer " + ada + ",Bearer " + cy},
			status: 400, code: pipeline.CodeInvalidRequest},
		tc{name: "malformed token", method: "GET", path: v1 + "/me", headers: bearer("dfoa_short"), status: 401, code: pipeline.CodeInvalidBearer, deny: invalidToken},
		tc{name: "app- key", method: "GET", path: v1 + "/me", headers: bearer("app-" + strings.Repeat("a", 24)), status: 401, code: pipeline.CodeInvalidBearer, deny: invalidToken},
		tc{name: "dfp_ token", method: "GET", path: v1 + "/me", headers: bearer("dfp_" + ada[5:]), status: 401, code: pipeline.CodeInvalidBearer, deny: invalidToken},
		tc{name: "oversized", method: "GET", path: v1 + "/me", headers: bearer(strings.Repeat("a", 5000)), status: 401, code: pipeline.CodeInvalidBearer, deny: invalidToken},
		// 7. Token.
		tc{name: "unknown token", method: "GET", path: v1 + "/me", headers: bearer("dfoa_" + strings.Repeat("Z", 43)), status: 401, code: pipeline.CodeInvalidBearer, deny: invalidToken},
		tc{name: "banned account", method: "GET", path: v1 + "/me", headers: bearer(bob), status: 401, code: pipeline.CodeInvalidBearer, deny: invalidToken},
		// 11. App.
		tc{name: "app id not uuid", method: "POST", path: v1 + "/apps/not-a-uuid/run", headers: bearer(ada), status: 404, code: pipeline.CodeAppNotFound},
		tc{name: "app missing", method: "POST", path: v1 + "/apps/" + appMissing + "/run", headers: bearer(ada), status: 404, code: pipeline.CodeAppNotFound},
		tc{name: "app not normal", method: "POST", path: v1 + "/apps/" + appNotNormal + "/run", headers: bearer(ada), status: 404, code: pipeline.CodeAppNotFound},
		tc{name: "app api disabled", method: "POST", path: v1 + "/apps/" + appAPIDisabled + "/run", headers: bearer(ada), status: 403, code: pipeline.CodeServiceAPIDisabled},
		tc{name: "app tenant archived", method: "POST", path: v1 + "/apps/" + appArchived + "/run", headers: bearer(ada), status: 403, code: pipeline.CodeWorkspaceUnavailable},
		tc{name: "app tenant missing", method: "POST", path: v1 + "/apps/" + appNoTenant + "/run", headers: bearer(ada), status: 403, code: pipeline.CodeWorkspaceUnavailable},
		// 12. Membership.
		tc{name: "app of another workspace", method: "POST", path: v1 + "/apps/" + appOther + "/run", headers: bearer(ada), status: 403, code: pipeline.CodeWorkspaceMembershipRevoked},
		tc{name: "non-member run", method: "POST", path: v1 + "/apps/" + appOK + "/run", headers: bearer(cy), status: 403, code: pipeline.CodeWorkspaceMembershipRevoked},
		tc{name: "non-member me", method: "GET", path: v1 + "/me", headers: bearer(cy), allow: cyH},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := srv.check(t, c.method, c.path, c.headers)
			if c.allow == nil {
				expectDeny(t, resp, c.status, c.code, c.deny)
				return
			}
			expectAllow(t, resp, c.allow)
			// authorization is forwarded by default.
			if slices.Contains(resp.GetOkResponse().GetHeadersToRemove(), "authorization") {
				t.Errorf("authorization removed with FORWARD_AUTHORIZATION unset")
			}
			if len(c.allow) > 0 {
				md := resp.GetDynamicMetadata().GetFields()
				if md["token_id"].GetStringValue() != c.allow[pipeline.HeaderTokenID] || md["route"].GetStringValue() == "" {
					t.Errorf("dynamic metadata %v", md)
				}
				rl := map[string]string{}
				for _, h := range resp.GetOkResponse().GetResponseHeadersToAdd() {
					rl[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
				}
				if rl["ratelimit-limit"] != "60" || rl["ratelimit-remaining"] == "" || rl["ratelimit-reset"] == "" {
					t.Errorf("RateLimit headers %v", rl)
				}
			}
		})
	}

	t.Run("smuggled identity headers on a dfoe_ request are removed", func(t *testing.T) {
		resp := srv.check(t, "GET", v1+"/me", with(bearer(ext), pipeline.HeaderAccountID, accountActive,
			pipeline.HeaderTenantID, tenantMain, "x-authgate-role", "admin", "x_authgate_account_id", accountActive))
		removed := expectAllow(t, resp, extH)
		for _, h := range []string{pipeline.HeaderAccountID, pipeline.HeaderTenantID, pipeline.HeaderAppID, "x-authgate-role",
			"x_authgate_account_id"} {
			if !slices.Contains(removed, h) {
				t.Errorf("%s not in headers_to_remove %v", h, removed)
			}
		}
	})
}

func TestInsufficientScopeAndFeatureFlag(t *testing.T) {
	w := newWorld(t)
	routes := t.TempDir() + "/routes.yaml"
	writeFile(t, routes, "prefix: /openapi/v1\nroutes:\n"+
		"  - {name: read, method: GET, path: /things, scope: apps:read, subjects: [account, external_sso]}\n")
	srv := w.start(map[string]string{"ROUTES_FILE": routes})
	ext, _ := w.externalToken("eve@partner.example")
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	expectDeny(t, srv.check(t, "GET", "/openapi/v1/things", bearer(ext)), 403, pipeline.CodeInsufficientScope,
		map[string]string{"www-authenticate": `Bearer realm="api", error="insufficient_scope", scope="apps:read"`})
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/things", bearer(ada)), accountHeaders(accountActive, "ada@example.com", adaID))

	off := w.start(map[string]string{"ENABLE_OAUTH_BEARER": "false"})
	expectDeny(t, off.check(t, "GET", "/openapi/v1/me", bearer(ada)), 503, pipeline.CodeBearerAuthDisabled, nil)
	expectAllow(t, off.check(t, "GET", "/openapi/v1/_health", nil), map[string]string{})
}

func TestForwardAuthorization(t *testing.T) {
	w := newWorld(t)
	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	want := accountHeaders(accountActive, "ada@example.com", adaID)

	removed := expectAllow(t, w.start(nil).check(t, "GET", "/openapi/v1/me", bearer(ada)), want)
	if slices.Contains(removed, "authorization") {
		t.Error("authorization removed by default")
	}
	removed = expectAllow(t, w.start(map[string]string{"FORWARD_AUTHORIZATION": "false"}).check(t, "GET", "/openapi/v1/me", bearer(ada)), want)
	if !slices.Contains(removed, "authorization") {
		t.Errorf("FORWARD_AUTHORIZATION=false: authorization not in %v", removed)
	}
}

func TestMembershipEnforcedUpstream(t *testing.T) {
	w := newWorld(t)
	srv := w.start(map[string]string{"MEMBERSHIP_ENFORCED_UPSTREAM": "true"})
	cy, cyID := w.accountToken(accountNotMember, "cy@example.com")
	cyH := accountHeaders(accountNotMember, "cy@example.com", cyID)
	// The app step still verifies the app's tenant; no membership step runs, so an unverified workspace_id is not announced.
	expectAllow(t, srv.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(cy)),
		with(cyH, pipeline.HeaderAppID, appOK, pipeline.HeaderTenantID, tenantMain))
	expectAllow(t, srv.check(t, "GET", "/openapi/v1/apps?workspace_id="+tenantOther, bearer(cy)), cyH)
	expectDeny(t, srv.check(t, "POST", "/openapi/v1/apps/"+appAPIDisabled+"/run", bearer(cy)), 403, pipeline.CodeServiceAPIDisabled, nil)
}

func TestStartRejectsBadRoutesFile(t *testing.T) {
	w := newWorld(t)
	routes := t.TempDir() + "/routes.yaml"
	writeFile(t, routes, "routes:\n  - name: a\n    method: GET\n    path: /a\n    auth: none\n    steps: [app]\n")
	tel, err := telemetry.Setup(context.Background(), "extauthz-test", telemetry.Config{LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), w.config(map[string]string{"ROUTES_FILE": routes}), tel)
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Var != "ROUTES_FILE" || !strings.Contains(err.Error(), routes+":6:") ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("start error %v: want one line naming ROUTES_FILE and %s:6", err, routes)
	}
}
