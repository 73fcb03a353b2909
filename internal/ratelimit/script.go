package ratelimit

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

type mode string

const (
	modeAllow mode = "allow" // count if under the limit
	modeCheck mode = "check" // count nothing
	modeAdd   mode = "add"   // count whatever the limit
)

// slidingWindow is Dify's RateLimiter (ZREMRANGEBYSCORE -inf now-window; ZCARD; ZADD now; EXPIRE 2*window) as one script, with
// two changes that keep the count exact: the check and the add are atomic, and members are unique per request (Dify's member
// is the second, so requests within one second collapse into one entry). The clock is Redis's TIME, never a replica's.
//
// KEYS[1] bucket; ARGV[1] limit; ARGV[2] window in seconds; ARGV[3] mode; ARGV[4] the member, unique per request (the
// score already holds the time, so the member carries nothing else: a short one is cheaper to store and compare).
// Returns {allowed 0|1, count after this decision, oldest counted score or -1, TIME seconds, TIME microseconds}.
var slidingWindow = redis.NewScript(`
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local mode = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if mode == 'add' or (mode == 'allow' and count < limit) then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('EXPIRE', key, window * 2)
  count = count + 1
  allowed = 1
elseif mode == 'check' and count < limit then
  allowed = 1
end
local oldest = -1
if count == 1 and allowed == 1 and mode ~= 'check' then
  oldest = now -- the entry just added is the only one
elseif count > 0 then
  oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
end
return {allowed, count, oldest, now, tonumber(t[2])}
`)

// decide turns the script's reply into a Decision.
func decide(reply any, limit int, windowSec int64) (Decision, error) {
	vals, ok := reply.([]any)
	if !ok || len(vals) != 5 {
		return Decision{}, fmt.Errorf("ratelimit: unexpected script reply %T", reply)
	}
	var n [5]int64
	for i, v := range vals {
		if n[i], ok = v.(int64); !ok {
			return Decision{}, fmt.Errorf("ratelimit: unexpected script reply element %T", v)
		}
	}
	allowed, count, oldest, nowSec, nowUsec := n[0] == 1, n[1], n[2], n[3], n[4]
	d := Decision{Allowed: allowed, Limit: limit, Remaining: max(limit-int(count), 0)}
	if oldest >= 0 {
		// The oldest entry is dropped once Redis's clock reaches oldest+window whole seconds.
		d.Reset = time.Duration(oldest+windowSec-nowSec)*time.Second - time.Duration(nowUsec)*time.Microsecond
	}
	if !allowed {
		d.RetryAfter = max(d.Reset, time.Second)
	}
	return d, nil
}
