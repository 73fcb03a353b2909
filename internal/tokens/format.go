package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// secretLen is the length of the base64url (unpadded) encoding of 32 random bytes.
const secretLen = 43

// ErrMalformed means a string is not an authgate token: unknown prefix, wrong length or a character outside base64url.
var ErrMalformed = errors.New("tokens: malformed token")

// Generate returns a new plaintext token of kind k: prefix + 43 base64url characters of 32 bytes from crypto/rand.
func Generate(k Kind) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("tokens: reading random bytes: %w", err)
	}
	return k.Prefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Parse returns the kind of a well-formed token, matching ^(dfoa|dfoe)_[A-Za-z0-9_-]{43}$ exactly; anything else is ErrMalformed.
func Parse(token string) (Kind, error) {
	for _, k := range Kinds {
		if len(token) != len(k.Prefix)+secretLen || token[:len(k.Prefix)] != k.Prefix {
			continue
		}
		for i := len(k.Prefix); i < len(token); i++ {
			if !isBase64URL(token[i]) {
				return Kind{}, ErrMalformed
			}
		}
		return k, nil
	}
	return Kind{}, ErrMalformed
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// Hash is the value stored in oauth_access_tokens.token_hash and used in Redis keys: hex(sha256(token)).
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
