package envoyshim

import (
	"strings"
	"testing"
)

// Cases beyond Envoy's own (envoy_paths_test.go has those, through the whole shim): the order of the steps and the corners
// of Chromium's canonicalizer that routing depends on.
func TestNormalizeTarget(t *testing.T) {
	for _, c := range []struct {
		in, want string // want "" = refused
	}{
		{"/a/b", "/a/b"},
		{"/", "/"},
		// Dot segments go before slashes are merged: ".." climbs over the empty segment, not over "a".
		{"/a//../b", "/a/b"},
		{"/a/.//b", "/a/b"},
		{"/a/./b/.", "/a/b/"},
		{"/a/..", "/"},
		{"/%2e%2E/x", "/x"},
		{"/a.b/c..d/...", "/a.b/c..d/..."},
		{"/a%2eb", "/a.b"},
		// Escaped unreserved characters are decoded; other escapes keep their hex digits' case.
		{"/%61%62%2D%5f%7E%30", "/ab-_~0"},
		{"/a%20b/%3b/%c3%a9", "/a%20b/%3b/%c3%a9"},
		// Characters a path may not hold are escaped, in upper case.
		{"/a b/\"x\"/<y>/{z}/|/^/`/\x7f/é", "/a%20b/%22x%22/%3Cy%3E/%7Bz%7D/%7C/%5E/%60/%7F/%C3%A9"},
		// A % that starts no escape stays, and cannot be completed into one by a decoded escape after it.
		{"/100%", "/100%"},
		{"/%zz", "/%zz"},
		{"/%%30%30", "/%2500"},
		{"/%%300", "/%2500"},
		// Backslashes are separators.
		{`/a\b\..\c`, "/a/c"},
		// The query is not touched.
		{"/a//./b?x=/../y//z&p=%2F", "/a/b?x=/../y//z&p=%2F"},
		{"/a?", "/a?"},
		// Refused: an escaped slash (REJECT_REQUEST), a NUL, a fragment.
		{"/openapi/v1/oauth%2Fdevice/token", ""},
		{"/a%5cb", ""},
		{"/a%00b", ""},
		{"/a#b", ""},
	} {
		got, ok := normalizeTarget(c.in, RejectEscapedSlashes, true, true)
		if !ok {
			got = ""
		}
		if got != c.want || ok != (c.want != "") {
			t.Errorf("normalizeTarget(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
}

func TestSanitizeUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"plain":            "plain",
		"caf\xe9":          "caf!",
		"caf\xc3\xa9":      "caf\xc3\xa9",
		"\xff\xfe ok \xc3": "!! ok !",
		"\xed\xa0\x80":     "!!!", // a surrogate is not UTF-8
	} {
		if got := sanitizeUTF8(in); got != want {
			t.Errorf("sanitizeUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzNormalizePath: whatever the client sends, a path Envoy's settings let through is absolute and has no dot segment,
// empty segment, backslash or escaped slash left for routing, extauthz and the upstream to read differently. (It is not
// always a fixed point, as Envoy's is not: "/\.;" becomes "/.;", whose parameter a second pass would strip.)
func FuzzNormalizePath(f *testing.F) {
	for _, seed := range []string{"/", "/a//b", "/a/../../b", "/%2e%2e/x", "/a/./b/.", "/a%2f..%2fb", "/.%2e/x", `/a\..\b`,
		"/..;x/y", "/%%30%30", "/a%2541", "//a/?b", "/a/b?c=/../d"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if !strings.HasPrefix(raw, "/") || strings.ContainsAny(raw, "\x00\r\n") {
			return // not a request target a server would parse
		}
		got, ok := normalizeTarget(raw, RejectEscapedSlashes, true, true)
		if !ok {
			return
		}
		path, _, _ := strings.Cut(got, "?")
		// Envoy's merge keeps a leading and a trailing slash, so a path of slashes only stays "//"; it matches no route
		// but the catch-all.
		if !strings.HasPrefix(path, "/") || (strings.Contains(path, "//") && path != "//") || strings.Contains(path, `\`) {
			t.Fatalf("normalize(%q) = %q", raw, got)
		}
		lower := strings.ToLower(path)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			t.Fatalf("normalize(%q) = %q keeps an escaped slash", raw, got)
		}
		for _, seg := range strings.Split(strings.ReplaceAll(lower, "%2e", "."), "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("normalize(%q) = %q left a dot segment", raw, got)
			}
		}
	})
}
