package envoyshim

import (
	"math"
	"strings"
)

// EscapedSlashesAction mirrors HttpConnectionManager.path_with_escaped_slashes_action: what happens to a path holding %2F or
// %5C (either case), which Envoy's router would match as one segment and an upstream that decodes them could read as two.
type EscapedSlashesAction int

const (
	// KeepUnchangedEscapedSlashes leaves them as they are (KEEP_UNCHANGED).
	KeepUnchangedEscapedSlashes EscapedSlashesAction = iota
	// RejectEscapedSlashes answers 400 before any filter runs (REJECT_REQUEST).
	RejectEscapedSlashes
	// UnescapeEscapedSlashes decodes them to / and \ before the other normalizations (UNESCAPE_AND_FORWARD).
	UnescapeEscapedSlashes
)

// normalizeTarget returns the request target (path and query) as Envoy's HttpConnectionManager hands it to the filters,
// the router and the upstream, following ConnectionManagerUtility::maybeNormalizePath; ok is false where Envoy answers
// 400 instead. In order:
//   - a fragment ('#') is refused (the http_reject_path_with_fragment default);
//   - escaped slashes are handled as path_with_escaped_slashes_action says;
//   - normalize_path: dot segments with path parameters (/..;x) lose the parameters, then the path is canonicalized as
//     Chromium's URL library does it (canonicalizePath), which Envoy's PathUtil::canonicalPath calls;
//   - merge_slashes: runs of / become one, after the dot segments are gone, so /a//../b is /a/b and not /b.
//
// Only the path is touched; the query goes on as the client sent it.
func normalizeTarget(target string, escaped EscapedSlashesAction, normalize, merge bool) (string, bool) {
	if strings.Contains(target, "#") {
		return "", false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	if escaped != KeepUnchangedEscapedSlashes {
		unescaped := unescapeSlashes(path)
		if unescaped != path && escaped == RejectEscapedSlashes {
			return "", false
		}
		path = unescaped
	}
	if normalize {
		var ok bool
		if path, ok = canonicalizePath(stripDotSegmentParameters(path)); !ok {
			return "", false
		}
	}
	if merge {
		path = mergeSlashes(path)
	}
	if hasQuery {
		return path + "?" + query, true
	}
	return path, true
}

// unescapeSlashes decodes %2F and %5C, either case (PathUtil::unescapeSlashes).
func unescapeSlashes(path string) string {
	if !strings.Contains(path, "%") {
		return path
	}
	return strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", `\`, "%5c", `\`).Replace(path)
}

// mergeSlashes turns each run of / into one, keeping a leading and a trailing one (PathUtil::mergeSlashes).
func mergeSlashes(path string) string {
	if !strings.Contains(path, "//") {
		return path
	}
	var b strings.Builder
	if strings.HasPrefix(path, "/") {
		b.WriteByte('/')
	}
	first := true
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" {
			continue
		}
		if !first {
			b.WriteByte('/')
		}
		b.WriteString(seg)
		first = false
	}
	if strings.HasSuffix(path, "/") {
		b.WriteByte('/')
	}
	return b.String()
}

// stripDotSegmentParameters turns a segment starting "..;" into ".." and one starting ".;" into ".", so canonicalization
// removes them as it would "/.." and "/." (PathUtil::stripParametersFromDotSegments): a server that drops path parameters
// would otherwise climb out of the prefix the route matched.
func stripDotSegmentParameters(path string) string {
	if !strings.Contains(path, ".;") {
		return path
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		switch {
		case strings.HasPrefix(s, "..;"):
			segs[i] = ".."
		case strings.HasPrefix(s, ".;"):
			segs[i] = "."
		}
	}
	return strings.Join(segs, "/")
}

// Character classes of Chromium's path canonicalizer (url_canon_path.cc, kPathCharLookup, as Envoy's snapshot of it in
// source/common/chromium_url has them).
const (
	charPass     = 0
	charSpecial  = 1 // needs handling beyond copying
	charEscape   = 2 | charSpecial
	charUnescape = 4 // an escaped one is decoded
	charInvalid  = 8 | charSpecial
)

var pathCharLookup = func() (t [256]byte) {
	for c := range 0x20 {
		t[c] = charEscape // control characters
	}
	t[0] = charInvalid
	for c := 0x7f; c < 0x100; c++ {
		t[c] = charEscape // DEL and every byte of a multi-byte character
	}
	for _, c := range ` "#%<>?\^` + "`{|}" {
		t[c] = charEscape
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = charUnescape
	}
	for c := byte('A'); c <= 'Z'; c++ {
		t[c], t[c+'a'-'A'] = charUnescape, charUnescape
	}
	t['-'], t['_'], t['~'] = charUnescape, charUnescape, charUnescape
	t['.'] = charSpecial
	return t
}()

// canonicalizePath is Chromium's url::CanonicalizePath (DoPath and DoPartialPath), which Envoy's normalize_path runs: a
// leading / added if missing, \ turned into /, "." and ".." segments (also spelled %2e) resolved without climbing above
// the root, escaped unreserved characters (letters, digits, - _ ~) decoded, characters that may not appear in a path
// escaped, every other escape kept with the case of its hex digits. ok is false when the path holds a NUL, escaped or
// not, for which Envoy answers 400.
func canonicalizePath(path string) (string, bool) {
	out := make([]byte, 0, len(path)+8)
	if path == "" {
		return "/", true
	}
	if !isURLSlash(path[0]) {
		out = append(out, '/')
	}
	const begin = 0 // where the path starts in out
	lastInvalidPercent := math.MinInt
	ok := true
	for i := 0; i < len(path); i++ {
		c := path[i]
		flags := pathCharLookup[c]
		if flags&charSpecial == 0 {
			out = append(out, c)
			continue
		}
		if dot := dotLen(path, i); dot > 0 {
			if len(out) > begin && out[len(out)-1] == '/' {
				disposition, consumed := classifyAfterDot(path, i+dot)
				switch disposition {
				case notADirectory:
					out = append(out, '.')
					i += dot - 1
				case directoryCurrent:
					i += dot + consumed - 1
				case directoryUp:
					out = backUpToPreviousSlash(begin, out)
					i += dot + consumed - 1
				}
			} else {
				out = append(out, '.') // part of a name
				i += dot - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			v, valid := decodeEscaped(path, i)
			if !valid {
				// A % that starts no escape is kept; remember it, so an escape decoded right after it cannot complete a
				// new escape with it ("%%30%30" must not become "%00").
				lastInvalidPercent = len(out)
				out = append(out, '%')
				continue
			}
			i += 2
			if pathCharLookup[v]&charUnescape != 0 {
				out = append(out, v)
				if lastInvalidPercent >= len(out)-3 {
					out = checkForNestedEscapes(path, i+1, lastInvalidPercent, out)
				}
				continue
			}
			out = append(out, '%', path[i-1], path[i])
			if pathCharLookup[v]&charInvalid == charInvalid {
				ok = false
			}
		case flags&charInvalid == charInvalid:
			out = appendEscaped(out, c)
			ok = false
		case flags&charEscape == charEscape:
			out = appendEscaped(out, c)
		}
	}
	return string(out), ok
}

func isURLSlash(c byte) bool { return c == '/' || c == '\\' }

// dotLen is the length of a dot at path[i]: 1 for ".", 3 for "%2e" in either case, 0 for anything else.
func dotLen(path string, i int) int {
	if path[i] == '.' {
		return 1
	}
	if path[i] == '%' && i+3 <= len(path) && path[i+1] == '2' && (path[i+2] == 'e' || path[i+2] == 'E') {
		return 3
	}
	return 0
}

type dotDisposition int

const (
	notADirectory dotDisposition = iota
	directoryCurrent
	directoryUp
)

// classifyAfterDot says what a dot that starts a segment is, from what follows it at after, and how many characters
// after it belong to it (a second dot, the slash that ends the segment).
func classifyAfterDot(path string, after int) (dotDisposition, int) {
	if after == len(path) {
		return directoryCurrent, 0
	}
	if isURLSlash(path[after]) {
		return directoryCurrent, 1
	}
	if second := dotLen(path, after); second > 0 {
		end := after + second
		if end == len(path) {
			return directoryUp, second
		}
		if isURLSlash(path[end]) {
			return directoryUp, second + 1
		}
	}
	return notADirectory, 0
}

// backUpToPreviousSlash drops the last segment of out, which ends with a slash, never going above begin.
func backUpToPreviousSlash(begin int, out []byte) []byte {
	i := len(out) - 1
	if i == begin {
		return out
	}
	i--
	for out[i] != '/' && i > begin {
		i--
	}
	return out[:i+1]
}

// decodeEscaped decodes the escape "%XY" at s[i].
func decodeEscaped(s string, i int) (byte, bool) {
	if i+3 > len(s) {
		return 0, false
	}
	hi, ok1 := hexValue(s[i+1])
	lo, ok2 := hexValue(s[i+2])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func appendEscaped(out []byte, c byte) []byte {
	const hex = "0123456789ABCDEF"
	return append(out, '%', hex[c>>4], hex[c&15])
}

// checkForNestedEscapes runs after an escape was decoded within two characters of a % that started no escape: if the
// decoded character makes that % the start of a valid escape, the % is written as %25, so the output cannot be decoded
// into something the input was not (Chromium's CheckForNestedEscapes).
func checkForNestedEscapes(path string, next, lastInvalidPercent int, out []byte) []byte {
	length := len(out)
	lastUnescaped := out[length-1]
	appendNext := lastInvalidPercent == length-2
	if appendNext {
		if next == len(path) || path[next] >= 0x80 {
			return out
		}
		out = append(out, path[next])
	}
	if _, valid := decodeEscaped(string(out), lastInvalidPercent); valid {
		if !appendNext {
			out = append(out, out[lastInvalidPercent+1])
		}
		out[lastInvalidPercent+1] = '2'
		out[lastInvalidPercent+2] = '5'
		return append(out, lastUnescaped)
	}
	if appendNext {
		out = out[:length]
	}
	return out
}
