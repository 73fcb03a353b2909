package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net/url"
	"os"
	"strings"
	"time"
)

// RedisMode is the Redis topology authgate connects to.
type RedisMode string

const (
	RedisStandalone RedisMode = "standalone" // one server (REDIS_URL, or REDIS_HOST and REDIS_PORT)
	RedisSentinel   RedisMode = "sentinel"   // a master found through Sentinel (REDIS_USE_SENTINEL)
	RedisCluster    RedisMode = "cluster"    // Redis Cluster (REDIS_USE_CLUSTERS)
)

// Redis is where both services keep their shared state: REDIS_URL when it is set, otherwise Dify's REDIS_* variables with
// Dify's meanings and defaults, so authgate can read the ConfigMap and Secret of Dify's api container. internal/redisclient
// turns it into a client.
type Redis struct {
	// URL is REDIS_URL (redis:// or rediss://, a single server). When set, nothing below is read.
	URL string

	Mode RedisMode
	// Addrs are host:port pairs: the server (standalone, REDIS_HOST:REDIS_PORT), the sentinels (REDIS_SENTINELS) or the
	// cluster's seed nodes (REDIS_CLUSTERS).
	Addrs []string
	// Username and Password authenticate to the data nodes (REDIS_USERNAME, REDIS_PASSWORD; on a Cluster
	// REDIS_CLUSTERS_PASSWORD first).
	Username, Password string
	// DB is REDIS_DB (a Cluster has only database 0).
	DB int
	// TLS is nil for plain TCP (REDIS_USE_SSL=false), else built from REDIS_SSL_*.
	TLS *tls.Config

	MasterName                         string        // REDIS_SENTINEL_SERVICE_NAME
	SentinelUsername, SentinelPassword string        // REDIS_SENTINEL_USERNAME, REDIS_SENTINEL_PASSWORD
	SentinelTimeout                    time.Duration // REDIS_SENTINEL_SOCKET_TIMEOUT: bounds each exchange with a listed sentinel
}

// String describes the connection for logs, without passwords.
func (r Redis) String() string {
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		return "redis url " + shownURL(r.URL, u, err)
	}
	s := fmt.Sprintf("redis %s %s", r.Mode, strings.Join(r.Addrs, ","))
	if r.Mode == RedisSentinel {
		s += " master " + r.MasterName
	}
	if r.Mode != RedisCluster {
		s += fmt.Sprintf(" db %d", r.DB)
	}
	if r.TLS != nil {
		s += " tls"
	}
	return s
}

// Dify's names, in the order the loader reads them.
const (
	envRedisURL              = "REDIS_URL"
	envRedisHost             = "REDIS_HOST"
	envRedisPort             = "REDIS_PORT"
	envRedisUsername         = "REDIS_USERNAME"
	envRedisPassword         = "REDIS_PASSWORD"
	envRedisDB               = "REDIS_DB"
	envRedisUseSSL           = "REDIS_USE_SSL"
	envRedisSSLCertReqs      = "REDIS_SSL_CERT_REQS"
	envRedisSSLCACerts       = "REDIS_SSL_CA_CERTS"
	envRedisSSLCertfile      = "REDIS_SSL_CERTFILE"
	envRedisSSLKeyfile       = "REDIS_SSL_KEYFILE"
	envRedisUseSentinel      = "REDIS_USE_SENTINEL"
	envRedisSentinels        = "REDIS_SENTINELS"
	envRedisSentinelService  = "REDIS_SENTINEL_SERVICE_NAME"
	envRedisSentinelUsername = "REDIS_SENTINEL_USERNAME"
	envRedisSentinelPassword = "REDIS_SENTINEL_PASSWORD"
	envRedisSentinelTimeout  = "REDIS_SENTINEL_SOCKET_TIMEOUT"
	envRedisUseClusters      = "REDIS_USE_CLUSTERS"
	envRedisClusters         = "REDIS_CLUSTERS"
	envRedisClustersPassword = "REDIS_CLUSTERS_PASSWORD"
)

func readRedis(r *reader) Redis {
	if url, ok := r.raw(envRedisURL); ok {
		// REDIS_URL wins; the REDIS_* variables (Dify's, often present in a shared ConfigMap) are not read. A topology switch
		// that is on is worth a word: the URL connects to one server whatever it says.
		for _, name := range []string{envRedisUseSentinel, envRedisUseClusters} {
			if v, ok := r.raw(name); ok {
				if on, err := parseDifyBool(v); err == nil && on {
					r.warn(envRedisURL, "set, so "+name+"=true is ignored: REDIS_URL connects to a single server")
				}
			}
		}
		return Redis{URL: url, Mode: RedisStandalone}
	}
	// Every variable is read and validated whatever the topology, as Dify's settings are: a value that would stop Dify's
	// api stops authgate too.
	host, hostSet := r.raw(envRedisHost)
	port := r.Int(envRedisPort, 6379, 1, 65535)
	c := Redis{
		Username: r.String(envRedisUsername, ""),
		Password: r.String(envRedisPassword, ""),
		DB:       r.Int(envRedisDB, 0, 0, math.MaxInt32),
	}
	useSSL := r.DifyBool(envRedisUseSSL, false)
	certReqs := r.String(envRedisSSLCertReqs, "CERT_NONE")
	caCerts := r.String(envRedisSSLCACerts, "")
	certFile := r.String(envRedisSSLCertfile, "")
	keyFile := r.String(envRedisSSLKeyfile, "")
	sentinel := r.DifyBool(envRedisUseSentinel, false)
	sentinels, _ := r.raw(envRedisSentinels)
	c.MasterName = r.String(envRedisSentinelService, "")
	c.SentinelUsername = r.String(envRedisSentinelUsername, "")
	c.SentinelPassword = r.String(envRedisSentinelPassword, "")
	c.SentinelTimeout = r.Seconds(envRedisSentinelTimeout, 100*time.Millisecond)
	cluster := r.DifyBool(envRedisUseClusters, false)
	clusters, _ := r.raw(envRedisClusters)
	clustersPassword := r.String(envRedisClustersPassword, "")

	switch {
	case sentinel && cluster:
		r.fail(envRedisUseSentinel, "true together with %s=true; choose one topology", envRedisUseClusters)
	case sentinel:
		c.Mode = RedisSentinel
		c.Addrs = r.hostPorts(envRedisSentinels, sentinels, envRedisUseSentinel)
		if c.MasterName == "" {
			r.fail(envRedisSentinelService, "required when %s=true", envRedisUseSentinel)
		}
	case cluster:
		c.Mode = RedisCluster
		c.Addrs = r.hostPorts(envRedisClusters, clusters, envRedisUseClusters)
		if clustersPassword != "" {
			c.Password = clustersPassword
		}
		if c.DB != 0 {
			r.warn(envRedisDB, "ignored: a Redis Cluster has only database 0")
			c.DB = 0
		}
	case !hostSet:
		r.fail(envRedisURL, "required unless %s, %s=true or %s=true is set", envRedisHost, envRedisUseSentinel, envRedisUseClusters)
	default:
		c.Mode = RedisStandalone
		c.Addrs = []string{joinHostPort(host, port)}
	}
	if useSSL {
		c.TLS = r.redisTLS(certReqs, caCerts, certFile, keyFile)
	}
	return c
}

// hostPorts parses a comma-separated host:port list (blank entries skipped). A malformed entry is named by its position, never
// quoted: an operator who pasted a URL with a password must not find it in the logs.
func (r *reader) hostPorts(name, v, switchName string) []string {
	var out []string
	for i, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		host, port, ok := splitHostPort(entry)
		if !ok {
			r.fail(name, "entry %d is not host:port", i+1)
			return nil
		}
		out = append(out, joinHostPort(host, port))
	}
	if len(out) == 0 {
		r.fail(name, "required when %s=true (comma-separated host:port)", switchName)
	}
	return out
}

// redisTLS builds the TLS settings as Dify's api applies them. REDIS_SSL_CERT_REQS takes Python's names (CERT_NONE, the
// default, CERT_OPTIONAL, CERT_REQUIRED) or redis-py's (none, optional, required); a client treats optional as required.
func (r *reader) redisTLS(certReqs, caCerts, certFile, keyFile string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch strings.TrimPrefix(strings.ToUpper(certReqs), "CERT_") {
	case "NONE":
		cfg.InsecureSkipVerify = true
		r.warn(envRedisSSLCertReqs, "CERT_NONE (Dify's default): Redis's certificate is not verified; set CERT_REQUIRED")
	case "OPTIONAL", "REQUIRED":
	default:
		r.fail(envRedisSSLCertReqs, "must be CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED: %q", certReqs)
		return cfg
	}
	if caCerts != "" {
		pem, err := os.ReadFile(caCerts)
		if err != nil {
			r.fail(envRedisSSLCACerts, "%v", err)
			return cfg
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			r.fail(envRedisSSLCACerts, "no PEM certificate in %s", caCerts)
			return cfg
		}
		cfg.RootCAs = pool
	}
	switch {
	case keyFile != "" && certFile == "":
		r.fail(envRedisSSLKeyfile, "set without %s", envRedisSSLCertfile)
	case certFile != "":
		// As Python's load_cert_chain: without a key file, the key is in the certificate file.
		cert, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			r.fail(envRedisSSLCertfile, "%v", err)
			return cfg
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if keyFile == "" {
		keyFile = certFile
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// crypto/tls's error never includes key material, only what failed to parse.
		return tls.Certificate{}, fmt.Errorf("client certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}
