// Package redisclient is the one place a Redis client is built: the topology (a single server, a Sentinel-managed master or
// a Cluster), URL parsing (with a fixed error that never quotes the URL), the production tuning, and the process's health
// breaker that every Redis user shares.
package redisclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/config"
)

// Options tune a client; zero values take the defaults.
type Options struct {
	// Redis is where to connect (config.Common.Redis): REDIS_URL, or Dify's REDIS_* variables for a standalone server,
	// Sentinel or Cluster.
	Redis config.Redis
	// URL, when set, is a redis:// or rediss:// URL that replaces Redis (tests and the embedded dev stack use it).
	URL string
	// CallTimeout bounds one call's read and write when the caller's context has no earlier deadline (default 1 s).
	CallTimeout time.Duration
	// DialTimeout bounds one connection attempt (default 1 s).
	DialTimeout time.Duration
	// PoolSize overrides go-redis's default (10 per CPU); on a Cluster it is per node.
	PoolSize int
	// Breaker tunes the health breaker.
	Breaker BreakerOptions
}

// Client is a Redis client with its health breaker. UniversalClient is a *redis.Client for a single server or a Sentinel
// master, a *redis.ClusterClient for a Cluster.
type Client struct {
	redis.UniversalClient
	Breaker *Breaker
}

// IsCluster reports whether rdb talks to a Redis Cluster, where the keys of one command or script must share a slot; rdb
// may be a Client or the go-redis client itself.
func IsCluster(rdb redis.UniversalClient) bool {
	if c, ok := rdb.(*Client); ok {
		rdb = c.UniversalClient
	}
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

// ErrBadURL is the error for a URL go-redis cannot parse. Its text is fixed: go-redis passes on net/url's error, which
// quotes the whole URL, password included.
type ErrBadURL struct{}

func (ErrBadURL) Error() string { return "not a redis:// or rediss:// URL" }

// ErrNoAddress is the error for settings without a server to connect to (config.Redis always has one).
var ErrNoAddress = errors.New("no Redis address")

// Open builds the client. Nothing connects until the first call, so a Redis that is down at start-up is an outage to ride
// out, not a crash loop.
func Open(opts Options) (*Client, error) {
	settings := opts.Redis
	if opts.URL != "" {
		settings = config.Redis{URL: opts.URL, Mode: config.RedisStandalone}
	}
	t := newTuning(opts)
	var rdb redis.UniversalClient
	switch {
	case settings.URL != "":
		ro, err := redis.ParseURL(settings.URL)
		if err != nil {
			return nil, ErrBadURL{}
		}
		t.apply(ro)
		rdb = redis.NewClient(ro)
	case len(settings.Addrs) == 0:
		return nil, ErrNoAddress
	case settings.Mode == config.RedisSentinel:
		rdb = redis.NewFailoverClient(t.failover(settings))
	case settings.Mode == config.RedisCluster:
		rdb = redis.NewClusterClient(t.cluster(settings))
	default:
		ro := &redis.Options{Addr: settings.Addrs[0], Username: settings.Username, Password: settings.Password,
			DB: settings.DB, TLSConfig: settings.TLS.Clone()}
		t.apply(ro)
		rdb = redis.NewClient(ro)
	}
	c := &Client{UniversalClient: rdb}
	// One breaker per client, and one client per process. On a Cluster the hook sits on the cluster client, around the
	// routing and redirects, so one logical call is one outcome; the probe's PING goes to whichever node the client picks.
	c.Breaker = NewBreaker(opts.Breaker, func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	rdb.AddHook(hook{c.Breaker})
	return c, nil
}

// tuning is the production settings: every call bounded by the caller's deadline, no retries by the library (a retried
// script may run twice; callers that want a retry make it idempotent), short dials, and RESP2 (nothing here uses what
// RESP3 adds, and on RESP3 go-redis looks for push notifications before every reply).
type tuning struct {
	call, dial time.Duration
	poolSize   int
}

func newTuning(opts Options) tuning {
	t := tuning{call: opts.CallTimeout, dial: opts.DialTimeout, poolSize: opts.PoolSize}
	if t.call <= 0 {
		t.call = time.Second
	}
	if t.dial <= 0 {
		t.dial = time.Second
	}
	return t
}

// apply tunes a single-server client; a URL may still ask for RESP3 (?protocol=3).
func (t tuning) apply(ro *redis.Options) {
	ro.ContextTimeoutEnabled = true
	ro.MaxRetries = -1
	ro.DialerRetries = 1
	ro.DialTimeout = t.dial
	ro.ReadTimeout = t.call
	ro.WriteTimeout = t.call
	ro.PoolTimeout = t.call
	if t.poolSize > 0 {
		ro.PoolSize = t.poolSize
	}
	if ro.Protocol == 0 {
		ro.Protocol = 2
	}
}

func (t tuning) universal(s config.Redis) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:    slices.Clone(s.Addrs),
		Username: s.Username, Password: s.Password, DB: s.DB,
		TLSConfig:             s.TLS.Clone(),
		Protocol:              2,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
		DialTimeout:           t.dial,
		ReadTimeout:           t.call,
		WriteTimeout:          t.call,
		PoolTimeout:           t.call,
		PoolSize:              t.poolSize,
	}
}

// failover is a client of the master that Sentinel names. go-redis asks the sentinels for the master whenever it dials, and
// drops its connections when Sentinel announces a new one, so a failover needs no new client.
func (t tuning) failover(s config.Redis) *redis.FailoverOptions {
	u := t.universal(s)
	u.MasterName = s.MasterName
	u.SentinelUsername, u.SentinelPassword = s.SentinelUsername, s.SentinelPassword
	fo := u.Failover()
	fo.Dialer = sentinelDialer(s.Addrs, s.SentinelTimeout, t.dial, fo.TLSConfig)
	return fo
}

// cluster is a Cluster client. It follows MOVED and ASK redirects (up to 3: a resharding or a failover moves slots), which
// also lets it resend a command once after a dropped connection; node clients themselves never retry.
func (t tuning) cluster(s config.Redis) *redis.ClusterOptions {
	u := t.universal(s)
	u.DB = 0
	u.MaxRedirects = 3
	return u.Cluster()
}

// sentinelDialer dials as go-redis does (TCP keep-alives, TLS when configured), and bounds every exchange with a listed
// sentinel by timeout (Dify's REDIS_SENTINEL_SOCKET_TIMEOUT): a sentinel that hangs is given up quickly for the next one,
// while the master keeps the ordinary call timeouts.
func sentinelDialer(sentinels []string, timeout, dialTimeout time.Duration, tlsConfig *tls.Config) func(context.Context, string, string) (net.Conn, error) {
	isSentinel := map[string]bool{}
	for _, a := range sentinels {
		isSentinel[a] = true
	}
	keepAlive := net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: dialTimeout, KeepAliveConfig: keepAlive}
		bounded := timeout > 0 && isSentinel[addr]
		if bounded {
			d.Timeout = min(dialTimeout, timeout)
		}
		var conn net.Conn
		var err error
		if tlsConfig == nil {
			conn, err = d.DialContext(ctx, network, addr)
		} else {
			conn, err = (&tls.Dialer{NetDialer: d, Config: tlsConfig}).DialContext(ctx, network, addr)
		}
		if err != nil || !bounded {
			return conn, err
		}
		return &boundedConn{Conn: conn, max: timeout}, nil
	}
}

// boundedConn caps every deadline go-redis sets on a sentinel connection. A zero deadline (no deadline: the connection that
// waits for Sentinel's failover announcements) is left alone.
type boundedConn struct {
	net.Conn
	max time.Duration
}

func (c *boundedConn) clamp(t time.Time) time.Time {
	if limit := time.Now().Add(c.max); !t.IsZero() && t.After(limit) {
		return limit
	}
	return t
}

func (c *boundedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *boundedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *boundedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

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
