package pipeline

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/authgate/authgate/internal/tokens"
)

//go:embed routes.default.yaml
var defaultPolicy []byte

// DefaultPolicyName is how errors in the embedded policy name their file.
const DefaultPolicyName = "routes.default.yaml (embedded)"

// LoadPolicy reads the policy at path (ROUTES_FILE), or the embedded default (docs/reference/routes.md) when path is empty.
func LoadPolicy(path string) (*Policy, error) {
	if path == "" {
		return ParsePolicy(DefaultPolicyName, defaultPolicy)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("route policy: %w", err)
	}
	return ParsePolicy(path, data)
}

type policyFile struct {
	Prefix string      `yaml:"prefix"`
	Routes []routeFile `yaml:"routes"`
}

type routeFile struct {
	Name            string   `yaml:"name"`
	Method          string   `yaml:"method"`
	Path            string   `yaml:"path"`
	Auth            string   `yaml:"auth"`
	Scope           string   `yaml:"scope"`
	Subjects        []string `yaml:"subjects"`
	Steps           []string `yaml:"steps"`
	Edition         string   `yaml:"edition"`
	LicenseRequired bool     `yaml:"license_required"`
	RejectQuery     []string `yaml:"reject_query"`
}

var knownMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// ParsePolicy decodes and validates a policy; every error names file:line.
func ParsePolicy(file string, data []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var pf policyFile
	if err := dec.Decode(&pf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty route policy", file)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s: %s", file, strings.Join(te.Errors, "; "))
		}
		return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second pass over the node tree gives every route and field its line for validation errors.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	lines := routeLines(&doc)
	at := func(i int, field string) string {
		if i < len(lines) {
			if l, ok := lines[i].fields[field]; ok {
				return fmt.Sprintf("%s:%d", file, l)
			}
			return fmt.Sprintf("%s:%d", file, lines[i].line)
		}
		return file
	}

	if pf.Prefix != "" && (!strings.HasPrefix(pf.Prefix, "/") || strings.HasSuffix(pf.Prefix, "/")) {
		return nil, fmt.Errorf("%s: prefix %q must start with / and not end with /", file, pf.Prefix)
	}
	if pf.Prefix != "" {
		if _, err := parsePattern(pf.Prefix); err != nil || strings.Contains(pf.Prefix, "{") {
			return nil, fmt.Errorf("%s: prefix %q must be literal path segments", file, pf.Prefix)
		}
	}
	if len(pf.Routes) == 0 {
		return nil, fmt.Errorf("%s: no routes", file)
	}
	routes := make([]*Route, 0, len(pf.Routes))
	names := map[string]int{}
	for i, rf := range pf.Routes {
		r, field, err := buildRoute(rf)
		if err != nil {
			return nil, fmt.Errorf("%s: route %q: %w", at(i, field), rf.Name, err)
		}
		if j, dup := names[r.Name]; dup {
			return nil, fmt.Errorf("%s: route name %q already used at %s", at(i, "name"), r.Name, at(j, "name"))
		}
		names[r.Name] = i
		for j, other := range routes {
			if other.Method != r.Method || !overlap(other.segments, r.segments) {
				continue
			}
			if !moreSpecific(other.segments, r.segments) && !moreSpecific(r.segments, other.segments) {
				return nil, fmt.Errorf("%s: %s %s conflicts with route %q (%s): equally specific patterns for the same method",
					at(i, "path"), r.Method, r.Pattern, other.Name, at(j, "path"))
			}
		}
		routes = append(routes, r)
	}
	return newPolicy(pf.Prefix, routes), nil
}

// buildRoute validates one route; on error it also names the offending field.
func buildRoute(rf routeFile) (*Route, string, error) {
	r := &Route{Name: rf.Name, Method: rf.Method, Pattern: rf.Path, LicenseRequired: rf.LicenseRequired}
	if r.Name == "" {
		return nil, "name", errors.New("name is required")
	}
	if !slices.Contains(knownMethods, r.Method) {
		return nil, "method", fmt.Errorf("method %q is not one of %s", r.Method, strings.Join(knownMethods, ", "))
	}
	segs, err := parsePattern(rf.Path)
	if err != nil {
		return nil, "path", err
	}
	r.segments = segs
	switch rf.Edition {
	case "", "any":
	case "ee":
		r.EnterpriseOnly = true
	default:
		return nil, "edition", fmt.Errorf("edition %q is not any or ee", rf.Edition)
	}
	for _, q := range rf.RejectQuery {
		if q == "" {
			return nil, "reject_query", errors.New("empty reject_query name")
		}
	}
	r.RejectQuery = rf.RejectQuery

	switch rf.Auth {
	case "none":
		r.AuthNone = true
		switch {
		case rf.Scope != "":
			return nil, "scope", errors.New("scope on an auth: none route")
		case len(rf.Steps) > 0:
			return nil, "steps", errors.New("steps on an auth: none route")
		case len(rf.Subjects) > 0:
			return nil, "subjects", errors.New("subjects on an auth: none route")
		case rf.LicenseRequired:
			return nil, "license_required", errors.New("license_required on an auth: none route")
		case len(rf.RejectQuery) > 0:
			// auth: none routes are allowed before the query step runs: the list would silently never apply.
			return nil, "reject_query", errors.New("reject_query on an auth: none route")
		}
		return r, "", nil
	case "", "bearer":
	default:
		return nil, "auth", fmt.Errorf("auth %q is not bearer or none", rf.Auth)
	}

	if rf.Scope != "" {
		if !slices.Contains(tokens.KnownScopes, tokens.Scope(rf.Scope)) {
			return nil, "scope", fmt.Errorf("unknown scope %q", rf.Scope)
		}
		r.Scope = tokens.Scope(rf.Scope)
	}
	if len(rf.Subjects) == 0 {
		return nil, "subjects", errors.New("a bearer route needs subjects (account, external_sso)")
	}
	for _, s := range rf.Subjects {
		t := tokens.SubjectType(s)
		if !t.Valid() || slices.Contains(r.Subjects, t) {
			return nil, "subjects", fmt.Errorf("subject %q is unknown or repeated", s)
		}
		r.Subjects = append(r.Subjects, t)
	}
	for _, s := range rf.Steps {
		st := Step(s)
		if (st != StepApp && st != StepMembership && st != StepAppAccess) || slices.Contains(r.Steps, st) {
			return nil, "steps", fmt.Errorf("step %q is unknown or repeated", s)
		}
		r.Steps = append(r.Steps, st)
	}
	if r.has(StepApp) && !hasWildcard(segs, "app_id") {
		return nil, "steps", errors.New("an app step needs an {app_id} path segment")
	}
	if r.has(StepAppAccess) && !r.has(StepApp) {
		return nil, "steps", errors.New("an app_access step needs the app step")
	}
	return r, "", nil
}

func hasWildcard(segs []segment, name string) bool {
	return slices.ContainsFunc(segs, func(s segment) bool { return s.wildcard == name })
}

// parsePattern parses "/literal/{name}/…": no wildcards other than whole-segment {name}, no empty or dot segments.
func parsePattern(p string) ([]segment, error) {
	if !strings.HasPrefix(p, "/") || p == "/" {
		return nil, fmt.Errorf("path %q must start with / and have at least one segment", p)
	}
	var segs []segment
	seen := map[string]bool{}
	for _, s := range strings.Split(p[1:], "/") {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			name := s[1 : len(s)-1]
			if !isIdentifier(name) || seen[name] {
				return nil, fmt.Errorf("path %q: wildcard {%s} must be a unique identifier (no ... wildcards)", p, name)
			}
			seen[name] = true
			segs = append(segs, segment{wildcard: name})
			continue
		}
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "{}%\\?#") {
			return nil, fmt.Errorf("path %q: segment %q is not a canonical literal", p, s)
		}
		segs = append(segs, segment{literal: s})
	}
	return segs, nil
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// routeLine is where a route and each of its fields start in the file.
type routeLine struct {
	line   int
	fields map[string]int
}

func routeLines(doc *yaml.Node) []routeLine {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != "routes" || top.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		var out []routeLine
		for _, item := range top.Content[i+1].Content {
			rl := routeLine{line: item.Line, fields: map[string]int{}}
			for k := 0; k+1 < len(item.Content); k += 2 {
				rl.fields[item.Content[k].Value] = item.Content[k].Line
			}
			out = append(out, rl)
		}
		return out
	}
	return nil
}
