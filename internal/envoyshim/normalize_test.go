package envoyshim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b":            "/a/b",
		"/a//b///c":       "/a/b/c",
		"/a/./b":          "/a/b",
		"/a/b/../c":       "/a/c",
		"/../../a":        "/a",
		"/a/%2e%2E/b":     "/b",
		"/a/..":           "/",
		"/a/.":            "/a/",
		"/a/%2F/../b":     "/a/b",
		"/a/%2Fx":         "/a/%2Fx",
		"/openapi/v1/me/": "/openapi/v1/me/",
	} {
		r := &http.Request{URL: mustParse(t, in)}
		normalizePath(r, true, true)
		if got := r.URL.EscapedPath(); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func mustParse(t testing.TB, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FuzzNormalizePath: whatever the client sends, the normalized path is absolute and has no dot or empty segments
// left for the Check and the upstream to disagree about.
func FuzzNormalizePath(f *testing.F) {
	for _, seed := range []string{"/", "/a//b", "/a/../../b", "/%2e%2e/x", "/a/./b/.", "/a%2f..%2fb", "/.%2e/x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil || u.RawQuery != "" || u.Fragment != "" || u.Host != "" {
			return
		}
		r := &http.Request{URL: u}
		normalizePath(r, true, true)
		p := r.URL.EscapedPath()
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") {
			t.Fatalf("normalize(%q) = %q", raw, p)
		}
		// Escaped slashes stay escaped (KEEP_UNCHANGED), so segments are those of the escaped path.
		for _, seg := range strings.Split(strings.ReplaceAll(strings.ToLower(p), "%2e", "."), "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("normalize(%q) left dot segment: %q", raw, p)
			}
		}
	})
}
