package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The benchmark shares the Redis server with tests that may be running, so it takes a database the way internal/testenv
// does: a lease key per database 1..15 in database 0 (same key names and lifetime), so neither side flushes the other's data.
// Spec'd key names (rl:…, auth:token:…) are fixed for Dify compatibility, so isolation must be by database.
const (
	firstLeasedDB, lastLeasedDB = 1, 15
	leaseTTL                    = 30 * time.Minute
	leaseWait                   = time.Minute
)

// leaseRedis leases and flushes a free database and returns its URL and the release function, which flushes it again.
func leaseRedis(ctx context.Context, base string) (string, func(), error) {
	opts, err := redis.ParseURL(base)
	if err != nil {
		return "", nil, fmt.Errorf("redis URL: %w", err)
	}
	opts.DB = 0
	leases := redis.NewClient(opts)
	holder := strconv.Itoa(os.Getpid()) + ":benchextauthz"
	deadline := time.Now().Add(leaseWait)
	for {
		for db := firstLeasedDB; db <= lastLeasedDB; db++ {
			key := fmt.Sprintf("authgate:testenv:db:%d", db)
			ok, err := leases.SetNX(ctx, key, holder, leaseTTL).Result()
			if err != nil {
				leases.Close()
				return "", nil, fmt.Errorf("redis at %s: %w", redactURL(base), err)
			}
			if !ok {
				continue
			}
			dbOpts := *opts
			dbOpts.DB = db
			c := redis.NewClient(&dbOpts)
			err = c.FlushDB(ctx).Err()
			release := func() {
				c.FlushDB(context.Background()) // a run leaves about a million limiter entries behind
				c.Close()
				leases.Del(context.Background(), key)
				leases.Close()
			}
			if err != nil {
				release()
				return "", nil, fmt.Errorf("flush redis db %d: %w", db, err)
			}
			u, err := url.Parse(base)
			if err != nil {
				release()
				return "", nil, err
			}
			u.Path = "/" + strconv.Itoa(db)
			return u.String(), release, nil
		}
		if time.Now().After(deadline) {
			leases.Close()
			return "", nil, fmt.Errorf("no free redis database in %d..%d after %s", firstLeasedDB, lastLeasedDB, leaseWait)
		}
		select {
		case <-ctx.Done():
			leases.Close()
			return "", nil, ctx.Err()
		case <-time.After(100 * time.Millisecond): // another holder will release its lease
		}
	}
}
