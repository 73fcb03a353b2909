// Package redisclient is the one place a Redis client is built: URL parsing (with a fixed error that never quotes the URL),
// the production tuning, and the process's health breaker that every Redis user shares.
package redisclient

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options tune a client; zero values take the defaults.
type Options struct {
	// URL is a redis:// or rediss:// URL (REDIS_URL).
	URL string
	// CallTimeout bounds one call's read and write when the caller's context has no earlier deadline (default 1 s).
	CallTimeout time.Duration
	// DialTimeout bounds one connection attempt (default 1 s).
	DialTimeout time.Duration
	// PoolSize overrides go-redis's default (10 per CPU).
	PoolSize int
	// Breaker tunes the health breaker.
	Breaker BreakerOptions
}

// Client is a Redis client with its health breaker.
type Client struct {
	redis.UniversalClient
	Breaker *Breaker
}

// ErrBadURL is the error for a URL go-redis cannot parse. Its text is fixed: go-redis passes on net/url's error, which
// quotes the whole URL, password included.
type ErrBadURL struct{}

func (ErrBadURL) Error() string { return "not a redis:// or rediss:// URL" }

// Open builds the client. Nothing connects until the first call, so a Redis that is down at start-up is an outage to ride
// out, not a crash loop.
func Open(opts Options) (*Client, error) {
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, ErrBadURL{}
	}
	tune(ro, opts)
	rdb := redis.NewClient(ro)
	c := &Client{UniversalClient: rdb}
	c.Breaker = NewBreaker(opts.Breaker, func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	rdb.AddHook(hook{c.Breaker})
	return c, nil
}

// tune applies the production settings: every call bounded by the caller's deadline, no retries by the library (a retried
// script may run twice; callers that want a retry make it idempotent), short dials, and RESP2 unless the URL asks for
// RESP3 (nothing here uses what RESP3 adds, and on RESP3 go-redis looks for push notifications before every reply).
func tune(ro *redis.Options, opts Options) {
	callTimeout := opts.CallTimeout
	if callTimeout <= 0 {
		callTimeout = time.Second
	}
	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = time.Second
	}
	ro.ContextTimeoutEnabled = true
	ro.MaxRetries = -1
	ro.DialerRetries = 1
	ro.DialTimeout = dialTimeout
	ro.ReadTimeout = callTimeout
	ro.WriteTimeout = callTimeout
	ro.PoolTimeout = callTimeout
	if opts.PoolSize > 0 {
		ro.PoolSize = opts.PoolSize
	}
	if ro.Protocol == 0 {
		ro.Protocol = 2
	}
}

// Close stops the breaker's probe and closes the connections.
func (c *Client) Close() error {
	c.Breaker.Close()
	return c.UniversalClient.Close()
}

// SetLogger sends go-redis's own messages to logger at debug level. go-redis logs every failed dial; during an outage that
// is a line per call, and the outage is already visible in the breaker's transitions and the metrics.
func SetLogger(logger *slog.Logger) { redis.SetLogger(debugLogger{logger}) }

type debugLogger struct{ logger *slog.Logger }

func (l debugLogger) Printf(ctx context.Context, format string, v ...any) {
	l.logger.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
