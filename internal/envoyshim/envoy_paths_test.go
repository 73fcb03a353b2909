package envoyshim_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/envoyshim"
	"github.com/authgate/authgate/internal/extauthz"
	"github.com/authgate/authgate/internal/pipeline"
)

type pathCase struct {
	in   string // the request target as the client sends it
	want string // the target Envoy routes, checks and forwards; "" = Envoy answers 400 before any filter
}

// envoyPathGroups are Envoy's own path tests, with the HttpConnectionManager settings each exercises. The inputs and
// results are those of envoyproxy/envoy:
//   - test/common/http/path_utility_test.cc: PathUtilityTest.AlreadyNormalPaths, InvalidPaths, NormalizeValidPaths and
//     NormalizeCasePath (PathUtil::canonicalPath, which normalize_path runs), and MergeSlashes (PathUtil::mergeSlashes);
//     the relative inputs ("a/b/../c", "..") are left out, as no HTTP request carries them;
//   - test/common/http/conn_manager_utility_test.cc: the maybeNormalizePath tests of path_with_escaped_slashes_action
//     and of all the normalizations together. Where Envoy's test uses UNESCAPE_AND_REDIRECT, the path is the same with
//     UNESCAPE_AND_FORWARD, which the shim has (the redirect itself is not mirrored).
//
// The last group is envoy/envoy.yaml's settings on paths this project relies on; their results follow from the order of
// maybeNormalizePath (escaped slashes, then canonicalization, then merging).
var envoyPathGroups = []struct {
	name             string
	escaped          envoyshim.EscapedSlashesAction
	normalize, merge bool
	cases            []pathCase
}{
	{name: "PathUtil::canonicalPath (normalize_path)", normalize: true, cases: []pathCase{
		{"/xyz", "/xyz"},
		{"/x/y/z", "/x/y/z"},
		{"/xyz/.%00../abc", ""},
		{"/xyz/%00.%00./abc", ""},
		{"/xyz/AAAAA%%0000/abc", ""},
		{"/a/b/../c", "/a/c"},
		{"/a/b/./c", "/a/b/c"},
		{"/a/b/../../../../c", "/c"},
		{`/a/..\c`, "/c"},
		{"/%c0%af", "/%c0%af"},
		{"/%5c%25", "/%5c%25"},
		{"/a/b/%2E%2E/c", "/a/c"},
		{"/a/b/%2E./c", "/a/c"},
		{"/a/b/%2E/c", "/a/b/c"},
		{"/../a/b", "/a/b"},
		{"/./a/b", "/a/b"},
		{"/xyz/..;foo=bar/abc", "/abc"},
		{"/..;foo=bar/abc", "/abc"},
		{"/xyz/..;foo=bar", "/"},
		{"/xyz/.;foo=bar/abc", "/xyz/abc"},
		{"/.;foo=bar/abc", "/abc"},
		{"/xyz/.;foo=bar", "/xyz/"},
		{"/xyz/..;foo=bar/.;v1=2,v2=3/abc", "/abc"},
		{"/..;foo=bar/abc/.;mmm", "/abc/"},
		{"/.;aaa/..;foo=bar/abc/.;mmm", "/abc/"},
		{"/xyz/..;foo=bar/.;fff=zzz", "/"},
		{"/xyz/..;foo=bar/.;fff=zzz?blah=woops", "/?blah=woops"},
		{"/xyz/..;foo=bar/.;fff=zzz/remain;blah-bluh?query", "/remain;blah-bluh?query"},
		{"/A/B/C", "/A/B/C"},
		{"/a/b/%2e%2e/c", "/a/c"},
		{"/a/%2F%2f/c", "/a/%2F%2f/c"},
	}},
	{name: "PathUtil::mergeSlashes (merge_slashes)", merge: true, cases: []pathCase{
		{"/a//b/c/", "/a/b/c/"},
		{"/a", "/a"},
		{"//a/b/c", "/a/b/c"},
		{"/a//b/c", "/a/b/c"},
		{"/a/b/c//", "/a/b/c/"},
		{"/a///b/c", "/a/b/c"},
		{"/a////b/c", "/a/b/c"},
		{"/a//b?a=///c", "/a/b?a=///c"},
		{"/a//b?", "/a/b?"},
		{"//a/?b", "/a/?b"},
	}},
	{name: "KeepEscapedSlashesWhenConfigured", escaped: envoyshim.KeepUnchangedEscapedSlashes, cases: []pathCase{
		{"/xyz%2fabc%5Cqrt", "/xyz%2fabc%5Cqrt"},
	}},
	{name: "RejectIfEscapedSlashes{Present,NotPresent}AndConfiguredToReject", escaped: envoyshim.RejectEscapedSlashes,
		cases: []pathCase{
			{"/xyz%2F..//abc", ""},
			{"/xyz%5c..//abc", ""},
			{"/xyz%EA/abc", "/xyz%EA/abc"},
		}},
	{name: "ContinueIfEscapedSlashesPresentAndConfiguredToUnescape", escaped: envoyshim.UnescapeEscapedSlashes,
		cases: []pathCase{
			{"/xyz%2F../%5Cabc", `/xyz/../\abc`},
		}},
	{name: "UnescapeSlashesAndChromiumNormalization, UnescapeSlashesRedirectAndChromiumNormalizationFailure",
		escaped: envoyshim.UnescapeEscapedSlashes, normalize: true, cases: []pathCase{
			{"/xyz%2f../%5Cabc", "//abc"},
			{"/xyz%2f../%5Cabc%00", ""},
		}},
	{name: "UnescapeAndMergeSlashes", escaped: envoyshim.UnescapeEscapedSlashes, merge: true, cases: []pathCase{
		{"/xyz%2f/..//abc%5C%5c", `/xyz/../abc\\`},
	}},
	{name: "AllNormalizations", escaped: envoyshim.UnescapeEscapedSlashes, normalize: true, merge: true, cases: []pathCase{
		{"/xyz%2f..%5c/%2Fabc", "/abc"},
	}},
	{name: "envoy.yaml", escaped: envoyshim.RejectEscapedSlashes, normalize: true, merge: true, cases: []pathCase{
		{"/openapi/v1/oauth%2Fdevice/token", ""},
		{"/openapi/v1/me/..%2F..%2Fapps", ""},
		{"/openapi/v1/me//../apps", "/openapi/v1/me/apps"}, // ".." removes the empty segment: slashes merge after
		{"/openapi/v1/%61pps?workspace_id=%2F", "/openapi/v1/apps?workspace_id=%2F"},
		{`/openapi/v1/oauth/device\..\..\me`, "/openapi/v1/me"},
		{"/openapi/v1/me#x", ""},
	}},
}

// TestEnvoyPathNormalization sends each case of Envoy's path tests through the shim, configured as the test configures
// Envoy, to a real extauthz: a path Envoy refuses is answered 400 with neither a Check nor an upstream request, and any
// other reaches extauthz's decoder and the upstream as exactly the path Envoy's tests expect.
func TestEnvoyPathNormalization(t *testing.T) {
	checked := &pathRecorder{}
	authz := startExtauthz(t, checked)
	up := startUpstream(t)
	for _, g := range envoyPathGroups {
		t.Run(g.name, func(t *testing.T) {
			shim := startShim(t, envoyshim.Config{Authz: authz, Timeout: 5 * time.Second, EscapedSlashes: g.escaped,
				NormalizePath: g.normalize, MergeSlashes: g.merge, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}}})
			for _, c := range g.cases {
				checks, forwarded := len(checked.seen()), len(up.received())
				status := rawGet(t, shim.URL, c.in)
				newChecks, newForwards := checked.seen()[checks:], up.received()[forwarded:]
				if c.want == "" {
					if status != http.StatusBadRequest || len(newChecks) != 0 || len(newForwards) != 0 {
						t.Errorf("%q: status %d, %d Checks, %d forwarded; want 400 and neither", c.in, status, len(newChecks),
							len(newForwards))
					}
					continue
				}
				if status != http.StatusOK || len(newChecks) != 1 || len(newForwards) != 1 {
					t.Errorf("%q: status %d, %d Checks, %d forwarded; want 200, one each", c.in, status, len(newChecks),
						len(newForwards))
					continue
				}
				if newChecks[0] != c.want || newForwards[0].URI != c.want {
					t.Errorf("%q: extauthz saw %q, the upstream %q; Envoy makes it %q", c.in, newChecks[0], newForwards[0].URI,
						c.want)
				}
			}
		})
	}
}

// pathRecorder is a pipeline that allows everything and keeps the path of each request extauthz decoded.
type pathRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (p *pathRecorder) Check(_ context.Context, req pipeline.Request) pipeline.Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paths = append(p.paths, req.Path)
	return pipeline.Decision{Allow: true}
}

func (p *pathRecorder) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.paths...)
}

// startExtauthz serves extauthz's ext_authz server, codec included, over checker.
func startExtauthz(t *testing.T, checker extauthz.Checker) authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := extauthz.NewGRPCServer()
	extauthz.NewServer(checker, slog.New(slog.DiscardHandler), 0).Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// rawGet sends GET target over HTTP/1.1 exactly as written: Go's client would clean or re-encode it.
func rawGet(t *testing.T, base, target string) int {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n", target); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: %v", target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
