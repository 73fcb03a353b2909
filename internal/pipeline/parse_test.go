package pipeline

import (
	"strings"
	"testing"
)

func TestCanonicalSegments(t *testing.T) {
	ok := map[string][]string{
		"/openapi/v1/me":                 {"openapi", "v1", "me"},
		"/openapi/v1/apps/%61bc/info":    {"openapi", "v1", "apps", "abc", "info"},
		"/openapi/v1/a%20b":              {"openapi", "v1", "a b"},
		"/openapi/v1/.well-known/x":      {"openapi", "v1", ".well-known", "x"},
		"/openapi/v1/apps/...":           {"openapi", "v1", "apps", "..."},
		"/openapi/v1/apps/x..y/describe": {"openapi", "v1", "apps", "x..y", "describe"},
	}
	for in, want := range ok {
		got, err := canonicalSegments(in)
		if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("canonicalSegments(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{"", "me", "/openapi/v1/me/", "/openapi//v1/me", "/openapi/v1/./me", "/openapi/v1/../v1/me",
		"/openapi/v1/apps/..", "/openapi/v1/a%2Fb", "/openapi/v1/a%2fb", "/openapi/v1/a%5Cb", "/openapi/v1/%2e%2e/me",
		"/openapi/v1/%2E", "/openapi/v1/a\\b", "/openapi/v1/a\x00b", "/openapi/v1/a\x7fb", "/openapi/v1/caf\xc3\xa9",
		"/openapi/v1/a%zz", "/openapi/v1/a%2", "/openapi/v1/a%00", "/openapi/v1/a%C3%A9", "/openapi/v1/a\tb", "/openapi/v1/a#b"}
	for _, in := range bad {
		if segs, err := canonicalSegments(in); err == nil {
			t.Errorf("canonicalSegments(%q) = %q, want an error", in, segs)
		}
	}
}

func TestCheckQuery(t *testing.T) {
	permitted := &Route{RejectQuery: []string{"workspace_id", "tag"}}
	apps := &Route{}
	cases := []struct {
		route *Route
		query string
		ws    string
		ok    bool
	}{
		{apps, "", "", true},
		{apps, "workspace_id=abc&page=2", "abc", true},
		{apps, "page=1&page=2", "", true},
		{apps, "workspace_id=a&workspace_id=b", "", false},
		{apps, "work%73pace_id=a", "", false},
		{apps, "workspace%5Fid=a", "", false},
		{apps, "workspace_id=%zz", "", false},
		{apps, "x%zz=1", "", false},
		{apps, "workspace_id=a%20b", "a b", true},
		{permitted, "page=1", "", true},
		{permitted, "tag=x", "", false},
		{permitted, "workspace_id=x", "", false},
		{permitted, "t%61g=x", "", false},
	}
	for _, c := range cases {
		ws, ok := checkQuery(c.route, c.query)
		if ws != c.ws || ok != c.ok {
			t.Errorf("checkQuery(%v, %q) = %q, %v; want %q, %v", c.route.RejectQuery, c.query, ws, ok, c.ws, c.ok)
		}
	}
}

func FuzzCanonicalSegments(f *testing.F) {
	for _, s := range []string{"/openapi/v1/me", "/openapi/v1/apps/%2e%2e/info", "/a//b", "/a/./b", "/a%2Fb", "/caf\xc3\xa9", "/a%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		segs, err := canonicalSegments(path)
		if err != nil {
			return
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\") {
				t.Fatalf("canonicalSegments(%q) accepted segment %q", path, s)
			}
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] >= 0x7f {
					t.Fatalf("canonicalSegments(%q) accepted byte %#x", path, s[i])
				}
			}
		}
	})
}

func FuzzCheckQuery(f *testing.F) {
	for _, s := range []string{"workspace_id=a", "workspace_id=a&workspace_id=b", "work%73pace_id=a", "tag=1", "%zz"} {
		f.Add(s)
	}
	r := &Route{RejectQuery: []string{"tag"}}
	f.Fuzz(func(t *testing.T, q string) {
		ws, ok := checkQuery(r, q)
		if !ok && ws != "" {
			t.Fatalf("checkQuery(%q) rejected but returned %q", q, ws)
		}
	})
}
