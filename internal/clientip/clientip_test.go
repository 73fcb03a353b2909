package clientip

import (
	"net/netip"
	"strings"
	"testing"
)

func TestFromForwarded(t *testing.T) {
	cases := []struct {
		name, peer, xff string
		hops            int
		want            string
	}{
		{"no header, peer with port", "10.0.0.7:5123", "", 1, "10.0.0.7"},
		{"peer without port", "10.0.0.7", "", 0, "10.0.0.7"},
		{"ipv6 peer with port", "[2001:db8::1]:443", "", 0, "2001:db8::1"},
		{"hops 0 ignores the header", "10.0.0.7:1", "203.0.113.9", 0, "10.0.0.7"},
		{"negative hops ignores the header", "10.0.0.7:1", "203.0.113.9", -1, "10.0.0.7"},
		{"hops 1 takes the rightmost", "10.0.0.7:1", "198.51.100.1, 203.0.113.9", 1, "203.0.113.9"},
		{"client-chosen left entries are ignored", "10.0.0.7:1", "1.1.1.1, 2.2.2.2, 203.0.113.9", 1, "203.0.113.9"},
		{"hops 2 takes the second from the right", "10.0.0.7:1", "198.51.100.1, 203.0.113.9, 10.1.1.1", 2, "203.0.113.9"},
		{"too few entries fall back to the peer", "10.0.0.7:1", "203.0.113.9", 2, "10.0.0.7"},
		{"malformed entry falls back to the peer", "10.0.0.7:1", "203.0.113.9, not-an-ip", 1, "10.0.0.7"},
		{"empty entry falls back to the peer", "10.0.0.7:1", "203.0.113.9, ", 1, "10.0.0.7"},
		{"entry with port", "10.0.0.7:1", "203.0.113.9:4711", 1, "203.0.113.9"},
		{"bracketed ipv6 entry with port", "10.0.0.7:1", "[2001:db8::5]:4711", 1, "2001:db8::5"},
		{"ipv4-mapped ipv6 is unmapped", "10.0.0.7:1", "::ffff:203.0.113.9", 1, "203.0.113.9"},
		{"zone is dropped", "[fe80::1%eth0]:1", "", 0, "fe80::1"},
		{"no whitespace", "10.0.0.7:1", "198.51.100.1,203.0.113.9", 1, "203.0.113.9"},
		{"hostname entry falls back", "10.0.0.7:1", "example.com", 1, "10.0.0.7"},
		{"unparsable peer is the zero addr", "nonsense", "", 0, "invalid IP"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := FromForwarded(c.peer, c.xff, c.hops).String(); got != c.want {
				t.Fatalf("FromForwarded(%q, %q, %d) = %s, want %s", c.peer, c.xff, c.hops, got, c.want)
			}
		})
	}
}

func TestBucket(t *testing.T) {
	cases := map[string]string{
		"203.0.113.9":                 "203.0.113.9",
		"2001:db8:1:2:aaaa:bbbb:cc:d": "2001:db8:1:2::/64",
		"2001:db8:1:2::1":             "2001:db8:1:2::/64",
		"fe80::1%eth0":                "fe80::/64",
	}
	for in, want := range cases {
		if got := Bucket(netip.MustParseAddr(in)); got != want {
			t.Errorf("Bucket(%s) = %s, want %s", in, got, want)
		}
	}
	if Bucket(netip.MustParseAddr("2001:db8:1:2::1")) != Bucket(netip.MustParseAddr("2001:db8:1:2:ffff::9")) {
		t.Error("addresses of one /64 must share a bucket")
	}
	if Bucket(netip.MustParseAddr("2001:db8:1:2::1")) == Bucket(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("different /64s must not share a bucket")
	}
}

// FuzzFromForwarded checks that no header value panics, that hops 0 never consults the header, and that the answer is
// always either the peer or the entry the hop count designates.
func FuzzFromForwarded(f *testing.F) {
	f.Add("10.0.0.7:5123", "198.51.100.1, 203.0.113.9", 1)
	f.Add("[2001:db8::1]:443", "[2001:db8::5]:4711,::ffff:1.2.3.4", 2)
	f.Add("10.0.0.7", ",,,", 3)
	f.Add("x", "1.2.3.4%zone, fe80::1%eth0", 1)
	f.Fuzz(func(t *testing.T, peer, xff string, hops int) {
		got := FromForwarded(peer, xff, hops)
		peerAddr := FromForwarded(peer, "", 0)
		if hops <= 0 && got != peerAddr {
			t.Fatalf("hops %d consulted the header: %v", hops, got)
		}
		if got == peerAddr {
			return
		}
		entries := strings.Split(xff, ",")
		i := len(entries) - hops
		if hops <= 0 || i < 0 {
			t.Fatalf("answer %v came from nowhere", got)
		}
		if want, ok := parse(entries[i]); !ok || want != got {
			t.Fatalf("answer %v is not entry %d (%q)", got, i, entries[i])
		}
		_ = Bucket(got)
	})
}
