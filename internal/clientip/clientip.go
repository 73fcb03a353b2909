// Package clientip derives the client address used for per-IP rate limits from the peer and X-Forwarded-For.
//
// Only entries appended by proxies we trust may be believed: a client can put anything at the left of X-Forwarded-For, so the
// address is read a fixed number of hops from the right, never from the left, and anything unparsable falls back to the peer.
package clientip

import (
	"net/netip"
	"strings"
)

// FromForwarded returns the client address: the X-Forwarded-For entry trustedHops from the right (1 = the rightmost entry,
// appended by the proxy in front of us), or the peer when trustedHops is 0 or negative, when the header has fewer entries than
// trustedHops, or when that entry is not an address. xff is the header value, repeated headers joined with commas. peer and
// entries are "ip", "ip:port" or "[ipv6]:port"; IPv4-mapped IPv6 addresses are returned as IPv4 and zones are dropped. The
// zero Addr is returned only when the peer itself is not an address.
func FromForwarded(peer string, xff string, trustedHops int) netip.Addr {
	if trustedHops > 0 && xff != "" {
		entries := strings.Split(xff, ",")
		if i := len(entries) - trustedHops; i >= 0 {
			if a, ok := parse(entries[i]); ok {
				return a
			}
		}
	}
	a, _ := parse(peer)
	return a
}

// Bucket is the rate-limit key part for a: IPv4 as is, IPv6 as its /64 prefix (one subscriber usually holds a whole /64, so
// per-address buckets would be free to multiply). The zero Addr yields "invalid IP".
func Bucket(a netip.Addr) string {
	if !a.Is6() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return a.String()
	}
	return p.String()
}

func parse(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}
