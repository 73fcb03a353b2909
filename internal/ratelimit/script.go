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
// It does only what the decision needs: the oldest entry is read first, because the Retry-After or RateLimit-Reset needs it
// anyway, and entries older than the window are removed only when that oldest one is among them (an empty removal is a
// command for nothing on almost every call); an empty bucket is not counted.
//
// KEYS[1] bucket; ARGV[1] limit; ARGV[2] window in seconds; ARGV[3] mode; ARGV[4] the member of this request, unique per
// request (the score already holds the time, so the member carries nothing else: a short one is cheaper to store and
// compare); ARGV[5..] members of hits this replica admitted earlier without Redis (batched mode), written first and counted
// whatever the limit, so the decision sees them.
// Returns {allowed 0|1, count after this decision, oldest counted score or -1, TIME seconds, TIME microseconds}.
var slidingWindow = redis.NewScript(`
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local mode = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1])
local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
if oldest and oldest <= now - window then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
end
local count = 0
if oldest then
  count = redis.call('ZCARD', key)
end
local added = false
if #ARGV > 4 then
  local args = {}
  for i = 5, #ARGV do
    args[#args + 1] = now
    args[#args + 1] = ARGV[i]
  end
  count = count + redis.call('ZADD', key, unpack(args))
  added = true
end
local allowed = 0
if mode == 'add' or (mode == 'allow' and count < limit) then
  count = count + redis.call('ZADD', key, now, ARGV[4])
  added = true
  allowed = 1
elseif mode == 'check' and count < limit then
  allowed = 1
end
if added then
  redis.call('EXPIRE', key, window * 2)
  oldest = oldest or now
end
return {allowed, count, oldest or -1, now, tonumber(t[2])}
`)

// reply is the script's answer, with the local instant before the call was sent: Redis ran the script after it, so a deadline
// counted from it never falls after the true one.
type reply struct {
	allowed         bool
	count           int64
	oldest          int64 // -1: nothing counted
	nowSec, nowUsec int64
	sentAt          time.Time
	limit           int
	windowSec       int64
}

func parseReply(raw any) (reply, error) {
	vals, ok := raw.([]any)
	if !ok || len(vals) != 5 {
		return reply{}, fmt.Errorf("ratelimit: unexpected script reply %T", raw)
	}
	var n [5]int64
	for i, v := range vals {
		if n[i], ok = v.(int64); !ok {
			return reply{}, fmt.Errorf("ratelimit: unexpected script reply element %T", v)
		}
	}
	return reply{allowed: n[0] == 1, count: n[1], oldest: n[2], nowSec: n[3], nowUsec: n[4]}, nil
}

// reset is how long after Redis ran the script the oldest counted entry leaves the window (0 if nothing is counted): it is
// dropped once Redis's clock reaches oldest+window whole seconds.
func reset(oldest, windowSec, nowSec, nowUsec int64) time.Duration {
	if oldest < 0 {
		return 0
	}
	return time.Duration(oldest+windowSec-nowSec)*time.Second - time.Duration(nowUsec)*time.Microsecond
}

// decision turns a reply into a Decision.
func (r reply) decision() Decision {
	d := Decision{Allowed: r.allowed, Limit: r.limit, Remaining: max(r.limit-int(r.count), 0),
		Reset: reset(r.oldest, r.windowSec, r.nowSec, r.nowUsec)}
	if !r.allowed {
		d.RetryAfter = max(d.Reset, time.Second)
	}
	return d
}
