// Package config turns environment variables into typed, validated configuration. A missing or invalid value is an *Error that
// names the variable, so the process can stop with one readable line.
package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Lookup reads one variable; os.LookupEnv fits.
type Lookup func(name string) (string, bool)

// Error names the variable that stopped start-up.
type Error struct {
	Var    string
	Reason string
}

func (e *Error) Error() string { return e.Var + ": " + e.Reason }

// reader reads variables and keeps the first error, so loaders stay linear.
type reader struct {
	lookup   Lookup
	err      error
	warnings []string
}

func (r *reader) fail(name, format string, args ...any) {
	if r.err == nil {
		r.err = &Error{Var: name, Reason: fmt.Sprintf(format, args...)}
	}
}

func (r *reader) raw(name string) (string, bool) {
	v, ok := r.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (r *reader) String(name, def string) string {
	if v, ok := r.raw(name); ok {
		return v
	}
	return def
}

func (r *reader) Required(name string) string {
	v, ok := r.raw(name)
	if !ok {
		r.fail(name, "required but not set")
	}
	return v
}

func (r *reader) Bool(name string, def bool) bool {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "not a boolean: %q", v)
	}
	return b
}

// Int reads an integer within [lo, hi].
func (r *reader) Int(name string, def, lo, hi int) int {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(name, "not an integer: %q", v)
		return def
	}
	if n < lo || n > hi {
		r.fail(name, "%d is outside %d..%d", n, lo, hi)
	}
	return n
}

// Duration reads a Go duration (e.g. "150ms", "24h") that must be positive.
func (r *reader) Duration(name string, def time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "not a duration (e.g. 150ms, 5m): %q", v)
		return def
	}
	if d <= 0 {
		r.fail(name, "must be positive: %q", v)
	}
	return d
}

// DurationOrOff reads a Go duration that may be 0 ("0" or "0s": the feature is off) but not negative.
func (r *reader) DurationOrOff(name string, def time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "not a duration (e.g. 5m, or 0 to turn it off): %q", v)
		return def
	}
	if d < 0 {
		r.fail(name, "must not be negative: %q", v)
	}
	return d
}

// URL reads an absolute http(s) URL without a trailing slash.
func (r *reader) URL(name, def string) string {
	v := r.String(name, def)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail(name, "not an absolute http(s) URL: %s", shownURL(v, u, err))
		return v
	}
	return strings.TrimRight(v, "/")
}

// shownURL is a rejected URL as an error may quote it: never with a password from its user info.
func shownURL(v string, u *url.URL, parseErr error) string {
	if parseErr == nil && u.User != nil {
		return strconv.Quote(u.Redacted())
	}
	if strings.Contains(v, "@") { // user info that net/url did not recognise as such
		return "(not shown: it may hold a password)"
	}
	return strconv.Quote(v)
}

// List reads a comma-separated list, dropping empty items.
func (r *reader) List(name string, def []string) []string {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	if len(out) == 0 {
		r.fail(name, "empty list")
	}
	return out
}

func (r *reader) warn(name, msg string) { r.warnings = append(r.warnings, name+": "+msg) }

// DifyBool reads a boolean of Dify's settings as pydantic parses it: true, false, 1, 0, yes, no, on, off, t, f, y, n, in any
// case. A shared ConfigMap written for Dify's api must mean the same to authgate.
func (r *reader) DifyBool(name string, def bool) bool {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	b, err := parseDifyBool(v)
	if err != nil {
		r.fail(name, "not a boolean: %q", v)
	}
	return b
}

func parseDifyBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "t", "yes", "y", "on":
		return true, nil
	case "0", "false", "f", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
}

// Seconds reads a positive number of seconds with an optional fraction ("0.1"), as Dify's float settings are written.
func (r *reader) Seconds(name string, def time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		r.fail(name, "not a number of seconds (e.g. 0.1): %q", v)
		return def
	}
	if f <= 0 || f > 3600 {
		r.fail(name, "must be more than 0 and at most 3600 seconds: %q", v)
		return def
	}
	return time.Duration(f * float64(time.Second))
}

// splitHostPort splits host:port ([v6]:port for IPv6) with a numeric port in 1..65535.
func splitHostPort(s string) (string, int, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", 0, false
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, false
	}
	return host, n, true
}

func joinHostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
