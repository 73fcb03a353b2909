package pipeline

import (
	"net/url"
	"slices"
	"strings"
)

// queryWorkspaceID is the one query parameter the pipeline reads (membership of GET /apps).
const queryWorkspaceID = "workspace_id"

// checkQuery applies the query step (docs/reference/check.md) and returns the workspace_id value. Parameters the pipeline reads or rejects must
// appear at most once and under their plain name, so the upstream cannot see a different value than the one checked.
func checkQuery(r *Route, rawQuery string) (workspaceID string, ok bool) {
	if rawQuery == "" {
		return "", true
	}
	guarded := func(name string) bool { return name == queryWorkspaceID || slices.Contains(r.RejectQuery, name) }
	seen := 0
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return "", false
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return "", false
		}
		if !guarded(name) {
			continue
		}
		if name != rawName || slices.Contains(r.RejectQuery, name) {
			return "", false
		}
		seen++
		if seen > 1 {
			return "", false
		}
		workspaceID = value
	}
	return workspaceID, true
}
