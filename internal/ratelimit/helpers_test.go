package ratelimit

import "github.com/redis/go-redis/v9"

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// tokenKey is the key the pipeline gives a token's bucket (Dify's name), so these tests exercise the real key shape.
func tokenKey(tokenHash string) string { return "rl:token_id:token:" + tokenHash }
