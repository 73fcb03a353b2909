package pipeline

import (
	"slices"
	"strings"

	"github.com/authgate/authgate/internal/tokens"
)

// Step is an optional pipeline step a route enables.
type Step string

const (
	StepApp        Step = "app"
	StepMembership Step = "membership"
	StepAppAccess  Step = "app_access"
)

// Route is one validated entry of the route policy.
type Route struct {
	Name            string
	Method          string
	Pattern         string // path without the policy prefix, as written: "/apps/{app_id}/info"
	AuthNone        bool
	Scope           tokens.Scope // "" = any authenticated subject
	Subjects        []tokens.SubjectType
	Steps           []Step
	EnterpriseOnly  bool // edition: ee
	LicenseRequired bool
	RejectQuery     []string

	segments []segment
}

// segment is a literal path segment, or a {name} wildcard when wildcard is set.
type segment struct {
	literal  string
	wildcard string
}

func (r *Route) has(s Step) bool { return slices.Contains(r.Steps, s) }

func (r *Route) allows(t tokens.SubjectType) bool { return slices.Contains(r.Subjects, t) }

// match reports whether the route's path matches segs and returns the wildcard values.
func (r *Route) match(segs []string) (map[string]string, bool) {
	if len(segs) != len(r.segments) {
		return nil, false
	}
	for i, s := range r.segments {
		if s.wildcard == "" && s.literal != segs[i] {
			return nil, false
		}
	}
	var params map[string]string
	for i, s := range r.segments {
		if s.wildcard != "" {
			if params == nil {
				params = make(map[string]string, 2)
			}
			params[s.wildcard] = segs[i]
		}
	}
	return params, true
}

// moreSpecific reports whether a matches a strict subset of the paths b matches (Go ServeMux's rule for patterns made of
// literals and single-segment wildcards): same length, and a is literal wherever b is, with the same literals.
func moreSpecific(a, b []segment) bool {
	if len(a) != len(b) {
		return false
	}
	strict := false
	for i := range a {
		switch {
		case b[i].wildcard != "" && a[i].wildcard == "":
			strict = true
		case b[i].wildcard != "" && a[i].wildcard != "":
		case a[i].wildcard != "":
			return false
		case a[i].literal != b[i].literal:
			return false
		}
	}
	return strict
}

// overlap reports whether some path matches both patterns.
func overlap(a, b []segment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].wildcard == "" && b[i].wildcard == "" && a[i].literal != b[i].literal {
			return false
		}
	}
	return true
}

// Policy is the validated route table.
type Policy struct {
	Prefix string
	Routes []*Route
	// byMethod indexes routes by method and segment count, for a match without scanning the whole table.
	byMethod map[string]map[int][]*Route
	prefix   []string // Prefix split into segments
}

func newPolicy(prefix string, routes []*Route) *Policy {
	p := &Policy{Prefix: prefix, Routes: routes, byMethod: map[string]map[int][]*Route{}}
	if prefix != "" {
		p.prefix = strings.Split(prefix[1:], "/")
	}
	for _, r := range routes {
		m := p.byMethod[r.Method]
		if m == nil {
			m = map[int][]*Route{}
			p.byMethod[r.Method] = m
		}
		m[len(r.segments)] = append(m[len(r.segments)], r)
	}
	return p
}

// Match finds the most specific route for method and the decoded path segments (prefix included). HEAD also matches GET
// routes, as with Go's ServeMux; an explicit HEAD route wins over a GET route of equal specificity.
func (p *Policy) Match(method string, segs []string) (*Route, map[string]string, bool) {
	pre := p.prefix
	if len(segs) < len(pre) || !slices.Equal(segs[:len(pre)], pre) {
		return nil, nil, false
	}
	rest := segs[len(pre):]
	best, params := p.bestOf(p.byMethod[method][len(rest)], rest)
	if method == "HEAD" {
		if r, ps := p.bestOf(p.byMethod["GET"][len(rest)], rest); r != nil && (best == nil || moreSpecific(r.segments, best.segments)) {
			best, params = r, ps
		}
	}
	return best, params, best != nil
}

func (p *Policy) bestOf(candidates []*Route, segs []string) (*Route, map[string]string) {
	var best *Route
	var bestParams map[string]string
	for _, r := range candidates {
		params, ok := r.match(segs)
		if !ok {
			continue
		}
		if best == nil || moreSpecific(r.segments, best.segments) {
			best, bestParams = r, params
		}
	}
	return best, bestParams
}
