package deviceflow

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// userCodeAlphabet has no vowels (no words) and no look-alike digits (RFC 8628 §6.1).
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

// userCodeLen counts the characters without the dash: 20^8 ≈ 2^34.6 codes.
const userCodeLen = 8

// newUserCode returns a code like "BDFG-HJKL" from crypto/rand by rejection sampling, so every letter is equally likely.
func newUserCode() (string, error) {
	var out [userCodeLen]byte
	var buf [32]byte
	for n := 0; n < userCodeLen; {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("deviceflow: reading random bytes: %w", err)
		}
		for _, b := range buf {
			// 240 is the largest multiple of 20 that fits in a byte.
			if b >= 240 || n == userCodeLen {
				continue
			}
			out[n] = userCodeAlphabet[int(b)%len(userCodeAlphabet)]
			n++
		}
	}
	return string(out[:4]) + "-" + string(out[4:]), nil
}

// normalizeUserCode is what a person may type for a code: any case, with or without dashes and spaces. It returns the
// canonical "XXXX-XXXX" form, or false when the input cannot be a code.
func normalizeUserCode(in string) (string, bool) {
	if len(in) > 64 {
		return "", false
	}
	var b strings.Builder
	for _, r := range in {
		switch {
		case r == '-' || r == ' ':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		}
		if r > 'Z' || !strings.ContainsRune(userCodeAlphabet, r) || b.Len() == userCodeLen {
			return "", false
		}
		b.WriteRune(r)
	}
	if b.Len() != userCodeLen {
		return "", false
	}
	s := b.String()
	return s[:4] + "-" + s[4:], true
}

// newDeviceCode returns "dc_" + 32 base64url characters (24 random bytes).
func newDeviceCode() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("deviceflow: reading random bytes: %w", err)
	}
	return "dc_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// hashDeviceCode names a device code in Redis and in logs; the code itself is a credential and is never stored.
func hashDeviceCode(deviceCode string) string {
	sum := sha256.Sum256([]byte(deviceCode))
	return hex.EncodeToString(sum[:])
}
