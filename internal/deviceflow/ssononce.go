package deviceflow

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key prefixes of Dify's single-use nonces (libs/device_flow_security.py), so a Dify API sharing this Redis agrees on what
// was already used.
const (
	assertionNonceKeyPrefix = "sso_assertion_nonce:"
	grantNonceKeyPrefix     = "device_approval_grant_nonce:"
)

// newSSONonce is 16 random bytes, base64url without padding (Python's secrets.token_urlsafe(16)).
func newSSONonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// nonceLedger remembers used nonces until the envelope carrying them expires: after that the envelope is refused anyway.
type nonceLedger struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// consume records nonce as used and reports whether this call was the first. Redis errors are returned: the caller fails closed.
func (l nonceLedger) consume(ctx context.Context, keyPrefix, nonce string, until time.Time) (bool, error) {
	ttl := until.Sub(l.now()).Truncate(time.Second) + time.Second
	if ttl < time.Second {
		ttl = time.Second
	}
	ctx, cancel := redisCall(ctx)
	defer cancel()
	first, err := l.rdb.SetNX(ctx, keyPrefix+nonce, "1", ttl).Result()
	if err != nil {
		return false, redisFailure("record single-use nonce", err)
	}
	return first, nil
}
