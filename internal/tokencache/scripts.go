package tokencache

import "github.com/redis/go-redis/v9"

// mergeVerdict sets verified_tenants[tenant] in an existing live entry, keeping its TTL. A missing key, a tombstone, or a
// value that is not a JSON object is left alone.
// KEYS[1] entry; ARGV[1] the tombstone value; ARGV[2] tenant id; ARGV[3] "1" member, "0" not. Returns 1 if merged.
var mergeVerdict = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] then return 0 end
local ok, e = pcall(cjson.decode, v)
if not ok or type(e) ~= 'table' or e.token_id == nil then return 0 end
if type(e.verified_tenants) ~= 'table' then e.verified_tenants = {} end
e.verified_tenants[ARGV[2]] = (ARGV[3] == '1')
redis.call('SET', KEYS[1], cjson.encode(e), 'KEEPTTL')
return 1
`)
