package testenv

import (
	"context"
	"errors"
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

// errRedisUnreachable marks a lease that failed because the server did not answer.
var errRedisUnreachable = errors.New("redis unreachable")

// RedisURL leases a Redis database of its own on TEST_REDIS_URL's server for the test, flushes it, and returns its URL. Spec'd
// key names (rl:…, auth:token:…) are fixed for Dify compatibility, so isolation is by database rather than by key prefix.
func RedisURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbURL, release, err := LeaseRedisDB(ctx, getenv("TEST_REDIS_URL", defaultRedisURL), strconv.Itoa(os.Getpid())+":"+t.Name())
	switch {
	case errors.Is(err, errRedisUnreachable):
		unavailable(t, "redis at TEST_REDIS_URL: %v", err)
	case err != nil:
		t.Fatalf("testenv: TEST_REDIS_URL: %v", err)
	}
	t.Cleanup(release)
	return dbURL
}

// LeaseRedisDB leases a free database among 1..15 on base's server for holder, flushes it, and returns its URL and the
// release that gives the lease back. A lease is a key per database in database 0 that expires after 30 minutes, so the
// tests and the benchmark, which share the server, never flush each other's data. It waits for a free database until ctx
// ends. Errors never quote base, which may carry a password.
func LeaseRedisDB(ctx context.Context, base, holder string) (dbURL string, release func(), err error) {
	opts, err := redis.ParseURL(base)
	if err != nil {
		// Not err: go-redis passes on net/url's error, which quotes the whole URL with its password.
		return "", nil, errors.New("not a redis:// or rediss:// URL")
	}
	opts.DB = 0
	leases := redis.NewClient(opts)
	defer leases.Close()
	if err := leases.Ping(ctx).Err(); err != nil {
		return "", nil, fmt.Errorf("%w: %v", errRedisUnreachable, err)
	}
	for {
		for db := firstTestDB; db <= lastTestDB; db++ {
			key := fmt.Sprintf("authgate:testenv:db:%d", db)
			ok, err := leases.SetNX(ctx, key, holder, leaseTTL).Result()
			if err != nil {
				return "", nil, fmt.Errorf("lease redis db: %w", err)
			}
			if !ok {
				continue
			}
			release := func() {
				c := redis.NewClient(opts)
				defer c.Close()
				c.Del(context.Background(), key)
			}
			dbOpts := *opts
			dbOpts.DB = db
			c := redis.NewClient(&dbOpts)
			err = c.FlushDB(ctx).Err()
			c.Close()
			if err != nil {
				release()
				return "", nil, fmt.Errorf("flush redis db %d: %w", db, err)
			}
			return withDB(base, db), release, nil
		}
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("no free redis database in %d..%d: %w", firstTestDB, lastTestDB, ctx.Err())
		case <-time.After(50 * time.Millisecond): // waiting for another holder to release its lease
		}
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
	return RedisClient(t, RedisURL(t))
}

// RedisClient returns a new client on url (another process's connection to the same database), closed at cleanup.
func RedisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
