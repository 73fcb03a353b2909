package tokens

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	// DefaultTTLDays is the lifetime of a token when OAUTH_TTL_DAYS is unset.
	DefaultTTLDays = 14
	minTTLDays     = 1
	maxTTLDays     = 365
)

// TTLPolicy is how long a minted token lives.
type TTLPolicy struct{ Days int }

// TTL returns the lifetime as a duration.
func (p TTLPolicy) TTL() time.Duration { return time.Duration(p.Days) * 24 * time.Hour }

// ExpiresAt returns when a token minted at now expires.
func (p TTLPolicy) ExpiresAt(now time.Time) time.Time { return now.Add(p.TTL()) }

// ParseTTLDays reads OAUTH_TTL_DAYS. Empty means the default; a non-integer is an error; a value outside 1..365 is clamped
// and a warning describing the clamp is returned for the caller to log.
func ParseTTLDays(raw string) (policy TTLPolicy, warning string, err error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return TTLPolicy{Days: DefaultTTLDays}, "", nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil {
		return TTLPolicy{}, "", fmt.Errorf("not an integer: %q", raw)
	}
	switch {
	case n < minTTLDays:
		return TTLPolicy{Days: minTTLDays}, fmt.Sprintf("%d is below %d; using %d", n, minTTLDays, minTTLDays), nil
	case n > maxTTLDays:
		return TTLPolicy{Days: maxTTLDays}, fmt.Sprintf("%d is above %d; using %d", n, maxTTLDays, maxTTLDays), nil
	}
	return TTLPolicy{Days: n}, "", nil
}
