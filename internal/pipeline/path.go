package pipeline

import (
	"errors"
	"net/url"
	"strings"
)

var errNonCanonical = errors.New("non-canonical path")

// splitTarget separates a request target into its path and its raw query.
func splitTarget(target string) (path, rawQuery string) {
	path, rawQuery, _ = strings.Cut(target, "?")
	return path, rawQuery
}

// canonicalSegments returns the decoded segments of a canonical absolute path, or errNonCanonical. Anything an upstream
// might resolve differently from the route matcher is refused (docs/reference/check.md, path step): dot segments, empty segments (// and a
// trailing /), encoded or literal separators (%2F, %5C, \), an encoded dot, control and non-ASCII bytes, broken escapes.
func canonicalSegments(path string) ([]string, error) {
	if path == "" || path[0] != '/' {
		return nil, errNonCanonical
	}
	if path == "/" {
		return nil, nil
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c < 0x20 || c >= 0x7f || c == '\\' || c == '#' {
			return nil, errNonCanonical
		}
		if c == '%' {
			if i+2 >= len(path) {
				return nil, errNonCanonical
			}
			switch strings.ToUpper(path[i+1 : i+3]) {
			case "2F", "5C", "2E":
				return nil, errNonCanonical
			}
		}
	}
	raw := strings.Split(path[1:], "/")
	segs := make([]string, len(raw))
	for i, s := range raw {
		if s == "" || s == "." || s == ".." {
			return nil, errNonCanonical
		}
		if !strings.Contains(s, "%") {
			segs[i] = s
			continue
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, errNonCanonical
		}
		for j := 0; j < len(d); j++ {
			if d[j] < 0x20 || d[j] >= 0x7f {
				return nil, errNonCanonical
			}
		}
		segs[i] = d
	}
	return segs, nil
}
