package ratelimit

import (
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
// One run decides a whole batch: every decision waiting when a round trip starts, in arrival order (a bucket that appears
// twice sees its first decision's hit), so Redis parses one command and reads the clock once per batch, not per decision.
// Each decision runs under pcall, so a bucket holding something other than a sorted set fails that decision alone.
//
// It does only what the decision needs: the oldest entry is read first, because the Retry-After or RateLimit-Reset needs it
// anyway, and entries older than the window are removed only when that oldest one is among them (an empty removal is a
// command for nothing on almost every call); an empty bucket is not counted.
//
// KEYS[i] the bucket of decision i. ARGV, per decision in order: limit; window in seconds; mode; the member of this request,
// unique per request (the score already holds the time, so the member carries nothing else: a short one is cheaper to store
// and compare); n; then n members of hits this replica admitted earlier without Redis (batched mode), written first and
// counted whatever the limit, so the decision sees them.
// Returns a flat array: per decision allowed (1, 0, or -1 when its commands failed), the count after it, the oldest counted
// score or -1; then TIME's seconds and microseconds.
const slidingWindowSource = `
local t = redis.call('TIME')
local now = tonumber(t[1])
local function decide(key, limit, window, mode, member, first, last)
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
  if last >= first then
    local args = {}
    for i = first, last do
      args[#args + 1] = now
      args[#args + 1] = ARGV[i]
    end
    count = count + redis.call('ZADD', key, unpack(args))
    added = true
  end
  local allowed = 0
  if mode == 'add' or (mode == 'allow' and count < limit) then
    count = count + redis.call('ZADD', key, now, member)
    added = true
    allowed = 1
  elseif mode == 'check' and count < limit then
    allowed = 1
  end
  if added then
    redis.call('EXPIRE', key, window * 2)
    oldest = oldest or now
  end
  return allowed, count, oldest or -1
end
local out = {}
local a = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a + 4])
  local ok, allowed, count, oldest = pcall(decide, KEYS[i], tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2],
    ARGV[a + 3], a + 5, a + 4 + n)
  if not ok then
    allowed, count, oldest = -1, 0, -1
  end
  out[#out + 1] = allowed
  out[#out + 1] = count
  out[#out + 1] = oldest
  a = a + 5 + n
end
out[#out + 1] = now
out[#out + 1] = tonumber(t[2])
return out
`

var slidingWindow = redis.NewScript(slidingWindowSource)

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
