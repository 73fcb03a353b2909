package pipeline

import (
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/tokens"
)

func mustDefault(t testing.TB) *Policy {
	t.Helper()
	p, err := LoadPolicy("")
	if err != nil {
		t.Fatalf("default policy: %v", err)
	}
	return p
}

func match(p *Policy, method, path string) (*Route, map[string]string) {
	segs, err := canonicalSegments(path)
	if err != nil {
		return nil, nil
	}
	r, params, _ := p.Match(method, segs)
	return r, params
}

// TestDefaultPolicyRows pins every row of docs/reference/routes.md's default policy to its route and policy.
func TestDefaultPolicyRows(t *testing.T) {
	p := mustDefault(t)
	const app = "/apps/0b0b0b0b-0000-4000-8000-000000000001"
	none := []string{"GET /_health", "GET /_version", "POST /oauth/device/code", "POST /oauth/device/token",
		"GET /oauth/device/lookup", "POST /oauth/device/approve", "POST /oauth/device/deny", "GET /oauth/device/sso-initiate", "POST /oauth/device/sso-initiate",
		"GET /oauth/device/sso-complete", "GET /device/sso-complete", "GET /oauth/device/approval-context",
		"POST /oauth/device/approve-external", "POST /oauth/device/deny-external", "POST /oauth/revoke",
		"GET /.well-known/oauth-authorization-server"}
	for _, mp := range none {
		method, path, _ := strings.Cut(mp, " ")
		r, _ := match(p, method, "/openapi/v1"+path)
		if r == nil || !r.AuthNone {
			t.Errorf("%s: want an auth: none route, got %+v", mp, r)
		}
	}
	both := []tokens.SubjectType{tokens.SubjectAccount, tokens.SubjectExternalSSO}
	acct := []tokens.SubjectType{tokens.SubjectAccount}
	ext := []tokens.SubjectType{tokens.SubjectExternalSSO}
	run := []Step{StepApp, StepMembership, StepAppAccess}
	bearer := []struct {
		mp       string
		scope    tokens.Scope
		subjects []tokens.SubjectType
		steps    []Step
		ee       bool
	}{
		{"GET /me", "", both, nil, false},
		{"GET /account", "", both, nil, false},
		{"GET /account/sessions", "", both, nil, false},
		{"DELETE /account/sessions/self", "", both, nil, false},
		{"DELETE /account/sessions/abc", "", both, nil, false},
		{"DELETE /oauth/authorizations/self", "", both, nil, false},
		{"GET /workspaces", "", acct, nil, false},
		{"GET /workspaces/abc", "", acct, []Step{StepMembership}, false},
		{"GET /apps", tokens.ScopeAppsRead, acct, []Step{StepMembership}, false},
		{"GET " + app + "/info", tokens.ScopeAppsRead, acct, []Step{StepApp, StepMembership}, false},
		{"GET " + app + "/describe", tokens.ScopeAppsRead, acct, []Step{StepApp, StepMembership}, false},
		{"POST " + app + "/run", tokens.ScopeAppsRun, both, run, false},
		{"POST " + app + "/tasks/t1/stop", tokens.ScopeAppsRun, both, run, false},
		{"GET " + app + "/tasks/t1/events", tokens.ScopeAppsRun, both, run, false},
		{"POST " + app + "/files/upload", tokens.ScopeAppsRun, both, run, false},
		{"GET " + app + "/form/human_input/f1", tokens.ScopeAppsRun, both, run, false},
		{"POST " + app + "/form/human_input/f1", tokens.ScopeAppsRun, both, run, false},
		{"POST " + app + "/chat-messages", tokens.ScopeAppsRun, both, run, false},
		{"POST " + app + "/completion-messages", tokens.ScopeAppsRun, both, run, false},
		{"POST " + app + "/workflows/run", tokens.ScopeAppsRun, both, run, false},
		{"GET /apps/permitted", tokens.ScopeAppsReadPermitted, ext, nil, true},
		{"GET /permitted-external-apps", tokens.ScopeAppsReadPermittedExternal, ext, nil, true},
	}
	for _, c := range bearer {
		method, path, _ := strings.Cut(c.mp, " ")
		r, _ := match(p, method, "/openapi/v1"+path)
		if r == nil {
			t.Errorf("%s: no route", c.mp)
			continue
		}
		if r.AuthNone || r.Scope != c.scope || !equal(r.Subjects, c.subjects) || !equal(r.Steps, c.steps) ||
			r.EnterpriseOnly != c.ee || r.LicenseRequired != c.ee {
			t.Errorf("%s: route %+v", c.mp, r)
		}
		if c.ee && (!contains(r.RejectQuery, "workspace_id") || !contains(r.RejectQuery, "tag")) {
			t.Errorf("%s: reject_query %v", c.mp, r.RejectQuery)
		}
	}
	for _, mp := range []string{"GET /", "GET /openapi/v1", "GET /openapi/v1/nope", "POST /openapi/v1/me", "GET /me",
		"GET /openapi/v2/me", "PUT /openapi/v1/apps/x/run"} {
		method, path, _ := strings.Cut(mp, " ")
		if r, _ := match(p, method, path); r != nil {
			t.Errorf("%s: matched %q, want no route", mp, r.Name)
		}
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestMatchPrecedence(t *testing.T) {
	p := mustDefault(t)
	if r, _ := match(p, "DELETE", "/openapi/v1/account/sessions/self"); r == nil || r.Name != "account_session_self_delete" {
		t.Errorf("literal self must beat {session_id}: %+v", r)
	}
	r, params := match(p, "DELETE", "/openapi/v1/account/sessions/s-1")
	if r == nil || r.Name != "account_session_delete" || params["session_id"] != "s-1" {
		t.Errorf("{session_id}: %+v %v", r, params)
	}
	if r, _ := match(p, "HEAD", "/openapi/v1/_health"); r == nil || r.Name != "health" {
		t.Errorf("HEAD must match GET: %+v", r)
	}
	if r, _ := match(p, "HEAD", "/openapi/v1/oauth/device/code"); r != nil {
		t.Errorf("HEAD must not match POST: %+v", r)
	}
	r, params = match(p, "GET", "/openapi/v1/apps/%61pp/info")
	if r == nil || params["app_id"] != "app" {
		t.Errorf("wildcards take the decoded segment: %+v %v", r, params)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown field", "routes:\n  - name: a\n    method: GET\n    path: /a\n    auht: none\n", "p.yaml: line 5: field auht not found"},
		{"unknown top field", "prefx: /x\nroutes: []\n", "line 1: field prefx not found"},
		{"scope on none", "routes:\n  - name: a\n    method: GET\n    path: /a\n    auth: none\n    scope: apps:run\n", "p.yaml:6: route \"a\": scope on an auth: none route"},
		{"steps on none", "routes:\n  - {name: a, method: GET, path: /a, auth: none, steps: [membership]}\n", "p.yaml:2: route \"a\": steps on an auth: none"},
		{"reject_query on none", "routes:\n  - name: a\n    method: GET\n    path: /a\n    auth: none\n    reject_query: [tag]\n", "p.yaml:6: route \"a\": reject_query on an auth: none route"},
		{"subjects on none", "routes:\n  - {name: a, method: GET, path: /a, auth: none, subjects: [account]}\n", "p.yaml:2: route \"a\": subjects on an auth: none"},
		{"app without app_id", "routes:\n  - name: a\n    method: GET\n    path: /apps/{id}\n    subjects: [account]\n    steps: [app]\n", "p.yaml:6: route \"a\": an app step needs an {app_id}"},
		{"duplicate", "routes:\n  - {name: a, method: GET, path: \"/a/{x}\", auth: none}\n  - {name: b, method: GET, path: \"/a/{y}\", auth: none}\n", "p.yaml:3: GET /a/{y} conflicts with route \"a\" (p.yaml:2)"},
		{"conflict", "routes:\n  - {name: a, method: GET, path: \"/a/{x}\", auth: none}\n  - {name: b, method: GET, path: \"/{y}/b\", auth: none}\n", "p.yaml:3: GET /{y}/b conflicts"},
		{"unknown scope", "routes:\n  - {name: a, method: GET, path: /a, subjects: [account], scope: apps:all}\n", "unknown scope"},
		{"unknown subject", "routes:\n  - {name: a, method: GET, path: /a, subjects: [robot]}\n", "subject \"robot\""},
		{"no subjects", "routes:\n  - {name: a, method: GET, path: /a}\n", "needs subjects"},
		{"bad method", "routes:\n  - {name: a, method: get, path: /a, auth: none}\n", "method \"get\""},
		{"wildcard", "routes:\n  - {name: a, method: GET, path: \"/a/{rest...}\", auth: none}\n", "wildcard"},
		{"trailing slash", "routes:\n  - {name: a, method: GET, path: /a/, auth: none}\n", "not a canonical literal"},
		{"dup name", "routes:\n  - {name: a, method: GET, path: /a, auth: none}\n  - {name: a, method: GET, path: /b, auth: none}\n", "p.yaml:3: route name \"a\" already used at p.yaml:2"},
		{"edition", "routes:\n  - {name: a, method: GET, path: /a, auth: none, edition: pro}\n", "edition \"pro\""},
		{"empty", "", "empty route policy"},
		{"no routes", "prefix: /x\n", "no routes"},
		{"bad prefix", "prefix: x/\nroutes:\n  - {name: a, method: GET, path: /a, auth: none}\n", "prefix"},
		{"app_access without app", "routes:\n  - {name: a, method: GET, path: /a, subjects: [account], steps: [app_access]}\n", "needs the app step"},
	}
	for _, c := range cases {
		_, err := ParsePolicy("p.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	// Equally specific patterns for different methods, and a literal beside a wildcard, are fine.
	ok := "routes:\n  - {name: a, method: GET, path: \"/a/{x}\", auth: none}\n  - {name: b, method: POST, path: \"/a/{y}\", auth: none}\n" +
		"  - {name: c, method: GET, path: /a/self, auth: none}\n  - {name: d, method: HEAD, path: \"/a/{z}\", auth: none}\n"
	if _, err := ParsePolicy("p.yaml", []byte(ok)); err != nil {
		t.Errorf("valid policy: %v", err)
	}
}

func FuzzMatch(f *testing.F) {
	p := mustDefault(f)
	for _, s := range []string{"/openapi/v1/me", "/openapi/v1/apps/x/run", "/openapi/v1/account/sessions/self", "/", "/openapi"} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		segs, err := canonicalSegments(path)
		if err != nil {
			return
		}
		r, params, ok := p.Match(method, segs)
		if !ok {
			return
		}
		if r.Method != method && !(method == "HEAD" && r.Method == "GET") {
			t.Fatalf("%s %s matched %s route %q", method, path, r.Method, r.Name)
		}
		for _, s := range r.segments {
			if s.wildcard != "" && params[s.wildcard] == "" {
				t.Fatalf("%s %s: empty wildcard %s", method, path, s.wildcard)
			}
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(defaultPolicy))
	f.Add([]byte("routes:\n  - {name: a, method: GET, path: \"/a/{x}\", auth: none}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy("f.yaml", data)
		if err == nil && len(p.Routes) == 0 {
			t.Fatal("a valid policy has routes")
		}
	})
}
