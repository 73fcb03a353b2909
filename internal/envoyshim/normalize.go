package envoyshim

import (
	"net/http"
	"net/url"
	"strings"
)

// normalizePath rewrites r's path the way HttpConnectionManager.merge_slashes (runs of "/" become one) and
// normalize_path (RFC 3986 §5.2.4 dot-segment removal, where "%2e" counts as ".") do, so the Check and the upstream
// see one canonical path. Escaped slashes stay as they are (path_with_escaped_slashes_action: KEEP_UNCHANGED).
func normalizePath(r *http.Request, mergeSlashes, dotSegments bool) {
	p := r.URL.EscapedPath()
	if mergeSlashes {
		for strings.Contains(p, "//") {
			p = strings.ReplaceAll(p, "//", "/")
		}
	}
	if dotSegments {
		p = removeDotSegments(p)
	}
	unescaped, err := url.PathUnescape(p)
	if err != nil {
		return // an invalid escape could not have been parsed into r.URL in the first place
	}
	r.URL.Path, r.URL.RawPath = unescaped, p
}

func removeDotSegments(p string) string {
	segments := strings.Split(p, "/")
	out := make([]string, 0, len(segments))
	for i, seg := range segments {
		last := i == len(segments)-1
		switch strings.ToLower(strings.ReplaceAll(strings.ReplaceAll(seg, "%2e", "."), "%2E", ".")) {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, seg)
		}
	}
	joined := strings.Join(out, "/")
	if !strings.HasPrefix(joined, "/") {
		joined = "/" + joined
	}
	return joined
}
