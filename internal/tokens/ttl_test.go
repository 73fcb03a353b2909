package tokens

import (
	"strings"
	"testing"
	"time"
)

func TestParseTTLDays(t *testing.T) {
	cases := []struct {
		raw      string
		days     int
		warns    bool
		failsFor string // non-empty: an error is expected, mentioning this
	}{
		{"", 14, false, ""},
		{"   ", 14, false, ""},
		{"14", 14, false, ""},
		{" 30 ", 30, false, ""},
		{"1", 1, false, ""},
		{"365", 365, false, ""},
		{"0", 1, true, ""},
		{"-5", 1, true, ""},
		{"366", 365, true, ""},
		{"400", 365, true, ""},
		{"abc", 0, false, "abc"},
		{"1.5", 0, false, "1.5"},
		{"7d", 0, false, "7d"},
		{"99999999999999999999", 0, false, "99999999999999999999"},
	}
	for _, c := range cases {
		p, warning, err := ParseTTLDays(c.raw)
		if c.failsFor != "" {
			if err == nil || !strings.Contains(err.Error(), c.failsFor) {
				t.Errorf("ParseTTLDays(%q) = %+v, %q, %v; want an error naming the value", c.raw, p, warning, err)
			}
			continue
		}
		if err != nil || p.Days != c.days || (warning != "") != c.warns {
			t.Errorf("ParseTTLDays(%q) = %+v, %q, %v; want %d days, warning %v", c.raw, p, warning, err, c.days, c.warns)
		}
	}
}

func TestTTLPolicy(t *testing.T) {
	p := TTLPolicy{Days: 14}
	if p.TTL() != 14*24*time.Hour {
		t.Fatalf("TTL = %v", p.TTL())
	}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.FixedZone("X", 3600))
	if got := p.ExpiresAt(now); !got.Equal(now.Add(336 * time.Hour)) {
		t.Fatalf("ExpiresAt = %v", got)
	}
	tok := Token{ExpiresAt: now}
	if tok.Expired(now.Add(-time.Nanosecond)) || !tok.Expired(now) || !tok.Expired(now.Add(time.Second)) {
		t.Fatal("Expired is not !now.Before(ExpiresAt)")
	}
}
