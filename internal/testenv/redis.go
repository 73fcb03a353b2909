package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	defaultRedisURL = "redis://127.0.0.1:6379/0"
	// Databases 1..15 are handed out one test at a time; database 0 of TEST_REDIS_URL holds the leases.
	firstTestDB, lastTestDB = 1, 15
	leaseTTL                = 30 * time.Minute
)

// RedisURL leases a Redis database of its own on TEST_REDIS_URL's server for the test, flushes it, and returns its URL. Spec'd
// key names (rl:…, auth:token:…) are fixed for Dify compatibility, so isolation is by database rather than by key prefix.
func RedisURL(t testing.TB) string {
	t.Helper()
	base := getenv("TEST_REDIS_URL", defaultRedisURL)
	opts, err := redis.ParseURL(base)
	if err != nil {
		// Not err: go-redis passes on net/url's error, which quotes the whole URL with its password.
		t.Fatalf("testenv: TEST_REDIS_URL is not a redis:// or rediss:// URL")
	}
	opts.DB = 0
	leases := redis.NewClient(opts)
	defer leases.Close()
	ctx := context.Background()
	if err := leases.Ping(ctx).Err(); err != nil {
		unavailable(t, "redis at TEST_REDIS_URL unreachable: %v", err)
	}
	holder := strconv.Itoa(os.Getpid()) + ":" + t.Name()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		for db := firstTestDB; db <= lastTestDB; db++ {
			key := fmt.Sprintf("authgate:testenv:db:%d", db)
			ok, err := leases.SetNX(ctx, key, holder, leaseTTL).Result()
			if err != nil {
				t.Fatalf("testenv: lease redis db: %v", err)
			}
			if !ok {
				continue
			}
			dbOpts := *opts
			dbOpts.DB = db
			c := redis.NewClient(&dbOpts)
			err = c.FlushDB(ctx).Err()
			c.Close()
			if err != nil {
				t.Fatalf("testenv: flush redis db %d: %v", db, err)
			}
			t.Cleanup(func() {
				c := redis.NewClient(opts)
				defer c.Close()
				c.Del(context.Background(), key)
			})
			return withDB(base, db)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: no free redis database in %d..%d after 3m", firstTestDB, lastTestDB)
		}
		time.Sleep(50 * time.Millisecond) // waiting for another test to release a lease
	}
}

// withDB returns base with its database number replaced, keeping the scheme (rediss://), AUTH credentials and options.
func withDB(base string, db int) string {
	u, err := url.Parse(base)
	if err != nil {
		panic(err) // base already parsed as a Redis URL
	}
	u.Path = "/" + strconv.Itoa(db)
	return u.String()
}

// Redis returns a client on a leased, flushed Redis database (see RedisURL), closed at cleanup.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	return clientFor(t, RedisURL(t))
}

func clientFor(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
