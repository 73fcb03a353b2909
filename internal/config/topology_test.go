package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/authgate/authgate/internal/config"
)

// The passwords every case below sets: no error, warning or String may show them.
const (
	redisPW    = "redis-pw-Zq1"
	sentinelPW = "sentinel-pw-Zq2"
	clusterPW  = "cluster-pw-Zq3"
	dbPW       = "db-p@ss:w/rd?Zq4"
)

var passwords = []string{redisPW, sentinelPW, clusterPW, dbPW}

// difyEnv is a Lookup over exactly vars plus SECRET_KEY: neither REDIS_URL nor DATABASE_URL unless vars sets them.
func difyEnv(vars map[string]string) config.Lookup {
	return func(name string) (string, bool) {
		if name == "SECRET_KEY" {
			return testSecretKey, true
		}
		v, ok := vars[name]
		return v, ok
	}
}

// difyBase is the connection part of a Dify api environment: a standalone Redis and a Postgres by host.
func difyBase(overrides map[string]string) map[string]string {
	vars := map[string]string{
		"DB_HOST": "db", "DB_PASSWORD": dbPW,
		"REDIS_HOST": "redis", "REDIS_PASSWORD": redisPW,
	}
	for k, v := range overrides {
		vars[k] = v
	}
	return vars
}

// load runs both service loaders on vars and returns extauthz's result after checking deviceflow agrees.
func load(t *testing.T, vars map[string]string) (config.Extauthz, []string, error) {
	t.Helper()
	x, warnings, err := config.LoadExtauthz(difyEnv(vars))
	d, dwarnings, derr := config.LoadDeviceflow(difyEnv(vars))
	if fmt.Sprint(err) != fmt.Sprint(derr) || !slices.Equal(warnings, dwarnings) {
		t.Fatalf("extauthz and deviceflow disagree: %v / %v, %q / %q", err, derr, warnings, dwarnings)
	}
	if err == nil && (x.Redis.String() != d.Redis.String() || x.Database.DSN() != d.Database.DSN()) {
		t.Fatalf("extauthz and deviceflow read different connections")
	}
	for _, s := range append(warnings, fmt.Sprint(err), x.Redis.String(), x.Database.String()) {
		for _, pw := range passwords {
			if strings.Contains(s, pw) {
				t.Fatalf("a password is shown in %q", s)
			}
		}
	}
	return x, warnings, err
}

func mustLoad(t *testing.T, vars map[string]string) (config.Extauthz, []string) {
	t.Helper()
	x, warnings, err := load(t, vars)
	if err != nil {
		t.Fatalf("vars %v: %v", vars, err)
	}
	return x, warnings
}

func TestRedisStandaloneFromDifyVariables(t *testing.T) {
	x, warnings := mustLoad(t, difyBase(nil))
	r := x.Redis
	if len(warnings) != 0 || r.URL != "" || r.Mode != config.RedisStandalone || !slices.Equal(r.Addrs, []string{"redis:6379"}) ||
		r.Username != "" || r.Password != redisPW || r.DB != 0 || r.TLS != nil {
		t.Fatalf("defaults: %+v, warnings %q", r, warnings)
	}
	x, _ = mustLoad(t, difyBase(map[string]string{
		"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380", "REDIS_USERNAME": "authgate", "REDIS_DB": "3",
	}))
	r = x.Redis
	if !slices.Equal(r.Addrs, []string{"cache.internal:6380"}) || r.Username != "authgate" || r.DB != 3 {
		t.Fatalf("values: %+v", r)
	}
	x, _ = mustLoad(t, difyBase(map[string]string{"REDIS_HOST": "fd00::7"}))
	if !slices.Equal(x.Redis.Addrs, []string{"[fd00::7]:6379"}) {
		t.Fatalf("IPv6 host: %v", x.Redis.Addrs)
	}
}

func TestRedisURLWinsOverDifyVariables(t *testing.T) {
	for _, url := range []string{"redis://:pw@elsewhere:6379/1", " redis://elsewhere:6379/1 "} {
		x, warnings := mustLoad(t, difyBase(map[string]string{"REDIS_URL": url, "REDIS_USE_SENTINEL": "false"}))
		if x.Redis.URL != strings.TrimSpace(url) || x.Redis.Addrs != nil || len(warnings) != 0 {
			t.Errorf("REDIS_URL=%q: %+v, warnings %q", url, x.Redis, warnings)
		}
	}
	// A topology switch that the URL overrides is worth a warning, not a refusal: the URL is the operator's explicit choice.
	x, warnings := mustLoad(t, difyBase(map[string]string{"REDIS_URL": "redis://elsewhere:6379/1",
		"REDIS_USE_SENTINEL": "true", "REDIS_USE_CLUSTERS": "true"}))
	if x.Redis.URL == "" || len(warnings) != 2 || !strings.HasPrefix(warnings[0], "REDIS_URL: ") ||
		!strings.Contains(warnings[0], "REDIS_USE_SENTINEL") || !strings.Contains(warnings[1], "REDIS_USE_CLUSTERS") {
		t.Fatalf("REDIS_URL with topology switches: %+v, warnings %q", x.Redis, warnings)
	}
	// Empty counts as unset: the Dify variables apply.
	x, _ = mustLoad(t, difyBase(map[string]string{"REDIS_URL": "  "}))
	if x.Redis.URL != "" || x.Redis.Mode != config.RedisStandalone {
		t.Fatalf("empty REDIS_URL: %+v", x.Redis)
	}
}

func TestRedisSentinelFromDifyVariables(t *testing.T) {
	x, warnings := mustLoad(t, difyBase(map[string]string{
		"REDIS_USE_SENTINEL": "True", "REDIS_SENTINELS": " s1:26379, s2:26380,,", "REDIS_SENTINEL_SERVICE_NAME": "mymaster",
		"REDIS_SENTINEL_USERNAME": "watcher", "REDIS_SENTINEL_PASSWORD": sentinelPW, "REDIS_SENTINEL_SOCKET_TIMEOUT": "0.25",
		"REDIS_USERNAME": "app", "REDIS_DB": "2",
	}))
	r := x.Redis
	if len(warnings) != 0 || r.Mode != config.RedisSentinel || !slices.Equal(r.Addrs, []string{"s1:26379", "s2:26380"}) ||
		r.MasterName != "mymaster" || r.SentinelUsername != "watcher" || r.SentinelPassword != sentinelPW ||
		r.SentinelTimeout != 250*time.Millisecond || r.Username != "app" || r.Password != redisPW || r.DB != 2 {
		t.Fatalf("sentinel: %+v, warnings %q", r, warnings)
	}
	// Dify's default socket timeout is 0.1 s; REDIS_HOST is not needed.
	vars := difyBase(map[string]string{"REDIS_USE_SENTINEL": "yes", "REDIS_SENTINELS": "s1:26379",
		"REDIS_SENTINEL_SERVICE_NAME": "mymaster"})
	delete(vars, "REDIS_HOST")
	x, _ = mustLoad(t, vars)
	if x.Redis.SentinelTimeout != 100*time.Millisecond || x.Redis.Mode != config.RedisSentinel {
		t.Fatalf("sentinel defaults: %+v", x.Redis)
	}
}

func TestRedisClusterFromDifyVariables(t *testing.T) {
	x, warnings := mustLoad(t, difyBase(map[string]string{
		"REDIS_USE_CLUSTERS": "1", "REDIS_CLUSTERS": "n1:7000,n2:7001,n3:7002", "REDIS_CLUSTERS_PASSWORD": clusterPW,
	}))
	r := x.Redis
	if len(warnings) != 0 || r.Mode != config.RedisCluster || len(r.Addrs) != 3 || r.Password != clusterPW || r.DB != 0 {
		t.Fatalf("cluster: %+v, warnings %q", r, warnings)
	}
	// Without REDIS_CLUSTERS_PASSWORD the cluster uses REDIS_PASSWORD, as Dify does; REDIS_DB cannot apply.
	x, warnings = mustLoad(t, difyBase(map[string]string{"REDIS_USE_CLUSTERS": "on", "REDIS_CLUSTERS": "n1:7000",
		"REDIS_DB": "4"}))
	if x.Redis.Password != redisPW || x.Redis.DB != 0 || len(warnings) != 1 || !strings.HasPrefix(warnings[0], "REDIS_DB: ") {
		t.Fatalf("cluster without its own password: %+v, warnings %q", x.Redis, warnings)
	}
}

func TestRedisTLSFromDifyVariables(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, both := writeTLSFiles(t, dir)

	// Dify's default REDIS_SSL_CERT_REQS is CERT_NONE: encrypted, unverified, and said so.
	x, warnings := mustLoad(t, difyBase(map[string]string{"REDIS_USE_SSL": "true"}))
	if x.Redis.TLS == nil || !x.Redis.TLS.InsecureSkipVerify || len(warnings) != 1 ||
		!strings.HasPrefix(warnings[0], "REDIS_SSL_CERT_REQS: ") {
		t.Fatalf("TLS defaults: %+v, warnings %q", x.Redis.TLS, warnings)
	}
	for _, reqs := range []string{"CERT_REQUIRED", "required", "CERT_OPTIONAL", "optional"} {
		x, warnings = mustLoad(t, difyBase(map[string]string{"REDIS_USE_SSL": "true", "REDIS_SSL_CERT_REQS": reqs,
			"REDIS_SSL_CA_CERTS": ca, "REDIS_SSL_CERTFILE": cert, "REDIS_SSL_KEYFILE": key}))
		tc := x.Redis.TLS
		if tc == nil || tc.InsecureSkipVerify || tc.RootCAs == nil || len(tc.Certificates) != 1 || len(warnings) != 0 {
			t.Fatalf("REDIS_SSL_CERT_REQS=%s: %+v, warnings %q", reqs, tc, warnings)
		}
	}
	// As Python's load_cert_chain: the key may sit in the certificate file.
	x, _ = mustLoad(t, difyBase(map[string]string{"REDIS_USE_SSL": "true", "REDIS_SSL_CERT_REQS": "CERT_REQUIRED",
		"REDIS_SSL_CERTFILE": both}))
	if len(x.Redis.TLS.Certificates) != 1 || x.Redis.TLS.RootCAs != nil {
		t.Fatalf("certificate and key in one file: %+v", x.Redis.TLS)
	}
	// Without REDIS_USE_SSL the SSL settings are not used, as in Dify.
	x, _ = mustLoad(t, difyBase(map[string]string{"REDIS_SSL_CERT_REQS": "CERT_REQUIRED", "REDIS_SSL_CA_CERTS": ca}))
	if x.Redis.TLS != nil {
		t.Fatal("TLS configured without REDIS_USE_SSL")
	}
	// TLS applies to every topology.
	x, _ = mustLoad(t, difyBase(map[string]string{"REDIS_USE_SSL": "true", "REDIS_SSL_CERT_REQS": "CERT_REQUIRED",
		"REDIS_USE_CLUSTERS": "true", "REDIS_CLUSTERS": "n1:7000"}))
	if x.Redis.TLS == nil || x.Redis.Mode != config.RedisCluster {
		t.Fatalf("cluster over TLS: %+v", x.Redis)
	}
}

func TestDatabaseFromDifyVariables(t *testing.T) {
	x, warnings := mustLoad(t, difyBase(nil))
	d := x.Database
	if len(warnings) != 0 || d.URL != "" || d.Host != "db" || d.Port != 5432 || d.Username != "postgres" ||
		d.Password != dbPW || d.Name != "dify" {
		t.Fatalf("defaults: %+v, warnings %q", d, warnings)
	}
	cfg := parseDSN(t, d.DSN())
	if cfg.Host != "db" || cfg.Port != 5432 || cfg.User != "postgres" || cfg.Password != dbPW || cfg.Database != "dify" ||
		cfg.RuntimeParams["options"] != "-c timezone=UTC" {
		t.Fatalf("DSN of the defaults: host %s port %d user %s db %s params %v", cfg.Host, cfg.Port, cfg.User, cfg.Database,
			cfg.RuntimeParams)
	}

	x, warnings = mustLoad(t, difyBase(map[string]string{
		"DB_HOST": "pg.internal", "DB_PORT": "6432", "DB_USERNAME": "dify user", "DB_DATABASE": "dify_prod",
		"DB_EXTRAS":                    "sslmode=disable&keepalives_idle=60&keepalives=1&application_name=authgate&options=-c statement_timeout=5000",
		"DB_SESSION_TIMEZONE_OVERRIDE": "Asia/Tokyo",
		"DB_CHARSET":                   "utf8",
		"SQLALCHEMY_POOL_SIZE":         "20", "SQLALCHEMY_MAX_OVERFLOW": "5",
	}))
	cfg = parseDSN(t, x.Database.DSN())
	if cfg.Host != "pg.internal" || cfg.Port != 6432 || cfg.User != "dify user" || cfg.Database != "dify_prod" ||
		cfg.TLSConfig != nil || cfg.RuntimeParams["application_name"] != "authgate" ||
		cfg.RuntimeParams["options"] != "-c statement_timeout=5000 -c timezone=Asia/Tokyo" ||
		cfg.RuntimeParams["pool_max_conns"] != "25" {
		t.Fatalf("DSN: host %s port %d user %s db %s tls %v params %v", cfg.Host, cfg.Port, cfg.User, cfg.Database,
			cfg.TLSConfig != nil, cfg.RuntimeParams)
	}
	if _, ok := cfg.RuntimeParams["keepalives_idle"]; ok {
		t.Error("a libpq-only parameter would reach the server as a setting")
	}
	slices.Sort(warnings)
	if len(warnings) != 2 || !strings.HasPrefix(warnings[0], "DB_EXTRAS: keepalives ") ||
		!strings.HasPrefix(warnings[1], "DB_EXTRAS: keepalives_idle ") {
		t.Fatalf("warnings %q, want one per dropped libpq parameter", warnings)
	}

	// An empty DB_SESSION_TIMEZONE_OVERRIDE leaves the server's time zone alone, as in Dify; a Unix socket directory works.
	x, _ = mustLoad(t, difyBase(map[string]string{"DB_SESSION_TIMEZONE_OVERRIDE": "", "DB_HOST": "/var/run/postgresql"}))
	cfg = parseDSN(t, x.Database.DSN())
	if _, ok := cfg.RuntimeParams["options"]; ok || cfg.Host != "/var/run/postgresql" {
		t.Fatalf("no time zone override, socket: host %s params %v", cfg.Host, cfg.RuntimeParams)
	}
	// SQLALCHEMY_POOL_SIZE=0 (no limit in SQLAlchemy) keeps authgate's bounded default.
	x, warnings = mustLoad(t, difyBase(map[string]string{"SQLALCHEMY_POOL_SIZE": "0"}))
	if _, ok := x.Database.Params["pool_max_conns"]; ok || len(warnings) != 1 ||
		!strings.HasPrefix(warnings[0], "SQLALCHEMY_POOL_SIZE: ") {
		t.Fatalf("pool size 0: %v, warnings %q", x.Database.Params, warnings)
	}
}

func TestDatabaseURLWinsOverDifyVariables(t *testing.T) {
	x, _ := mustLoad(t, difyBase(map[string]string{"DATABASE_URL": "postgres://authgate@elsewhere/dify",
		"DB_TYPE": "mysql", "DB_EXTRAS": "%zz"}))
	if x.Database.DSN() != "postgres://authgate@elsewhere/dify" || x.Database.Host != "" {
		t.Fatalf("DATABASE_URL set: %+v", x.Database)
	}
	x, _ = mustLoad(t, difyBase(map[string]string{"DATABASE_URL": " "}))
	if x.Database.URL != "" || x.Database.Host != "db" {
		t.Fatalf("empty DATABASE_URL: %+v", x.Database)
	}
	m, err := config.LoadMaintenance(difyEnv(difyBase(map[string]string{"DB_EXTRAS": "keepalives=1"})))
	if err != nil || m.Database.Host != "db" || len(m.Warnings) != 1 {
		t.Fatalf("maintenance from DB_*: %+v, %v", m, err)
	}
}

// Every invalid or conflicting combination stops start-up with one line that names the variable to fix (and, for a
// conflict, the other one), never a password.
func TestInvalidConnectionSettings(t *testing.T) {
	dir := t.TempDir()
	_, cert, _, _ := writeTLSFiles(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	sentinel := map[string]string{"REDIS_USE_SENTINEL": "true", "REDIS_SENTINELS": "s1:26379",
		"REDIS_SENTINEL_SERVICE_NAME": "mymaster"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	ssl := map[string]string{"REDIS_USE_SSL": "true", "REDIS_SSL_CERT_REQS": "CERT_REQUIRED"}
	cases := []struct {
		name    string
		vars    map[string]string
		unset   []string
		wantVar string
		mention string // another variable the line must name
	}{
		{"sentinel and cluster", with(sentinel, "REDIS_USE_CLUSTERS", "true", "REDIS_CLUSTERS", "n1:7000"), nil,
			"REDIS_USE_SENTINEL", "REDIS_USE_CLUSTERS"},
		{"sentinel without service name", with(sentinel, "REDIS_SENTINEL_SERVICE_NAME", ""), nil,
			"REDIS_SENTINEL_SERVICE_NAME", "REDIS_USE_SENTINEL"},
		{"sentinel without sentinels", with(sentinel, "REDIS_SENTINELS", " , "), nil, "REDIS_SENTINELS", "REDIS_USE_SENTINEL"},
		{"sentinel entry without port", with(sentinel, "REDIS_SENTINELS", "s1:26379,s2"), nil, "REDIS_SENTINELS", ""},
		{"sentinel entry with a password", with(sentinel, "REDIS_SENTINELS", "user:"+sentinelPW+"@s1:26379"), nil,
			"REDIS_SENTINELS", ""},
		{"sentinel timeout zero", with(sentinel, "REDIS_SENTINEL_SOCKET_TIMEOUT", "0"), nil, "REDIS_SENTINEL_SOCKET_TIMEOUT", ""},
		{"sentinel timeout as a duration", with(sentinel, "REDIS_SENTINEL_SOCKET_TIMEOUT", "100ms"), nil,
			"REDIS_SENTINEL_SOCKET_TIMEOUT", ""},
		{"sentinel switch not a boolean", with(sentinel, "REDIS_USE_SENTINEL", "sometimes"), nil, "REDIS_USE_SENTINEL", ""},
		{"cluster without nodes", map[string]string{"REDIS_USE_CLUSTERS": "true"}, nil, "REDIS_CLUSTERS", "REDIS_USE_CLUSTERS"},
		{"cluster node port out of range", map[string]string{"REDIS_USE_CLUSTERS": "true", "REDIS_CLUSTERS": "n1:70000"},
			nil, "REDIS_CLUSTERS", ""},
		{"neither URL nor host", nil, []string{"REDIS_HOST"}, "REDIS_URL", "REDIS_HOST"},
		{"port not a number", map[string]string{"REDIS_PORT": "redis"}, nil, "REDIS_PORT", ""},
		{"port zero", map[string]string{"REDIS_PORT": "0"}, nil, "REDIS_PORT", ""},
		{"negative database", map[string]string{"REDIS_DB": "-1"}, nil, "REDIS_DB", ""},
		{"SSL switch not a boolean", map[string]string{"REDIS_USE_SSL": "maybe"}, nil, "REDIS_USE_SSL", ""},
		{"unknown cert requirement", with(ssl, "REDIS_SSL_CERT_REQS", "CERT_SOMETIMES"), nil, "REDIS_SSL_CERT_REQS", ""},
		{"missing CA file", with(ssl, "REDIS_SSL_CA_CERTS", filepath.Join(dir, "missing.pem")), nil, "REDIS_SSL_CA_CERTS", ""},
		{"CA file without a certificate", with(ssl, "REDIS_SSL_CA_CERTS", notPEM), nil, "REDIS_SSL_CA_CERTS", ""},
		{"key file without certificate", with(ssl, "REDIS_SSL_KEYFILE", cert), nil, "REDIS_SSL_KEYFILE", "REDIS_SSL_CERTFILE"},
		{"certificate without its key", with(ssl, "REDIS_SSL_CERTFILE", cert), nil, "REDIS_SSL_CERTFILE", ""},
		{"neither DATABASE_URL nor DB_HOST", nil, []string{"DB_HOST"}, "DATABASE_URL", "DB_HOST"},
		{"not Postgres", map[string]string{"DB_TYPE": "mysql"}, nil, "DB_TYPE", ""},
		{"DB port out of range", map[string]string{"DB_PORT": "65536"}, nil, "DB_PORT", ""},
		{"database name with a slash", map[string]string{"DB_DATABASE": "dify/x"}, nil, "DB_DATABASE", ""},
		{"not UTF-8", map[string]string{"DB_CHARSET": "latin1"}, nil, "DB_CHARSET", ""},
		{"extras not a query", map[string]string{"DB_EXTRAS": "sslmode=%zz"}, nil, "DB_EXTRAS", ""},
		{"extras with a bad sslmode", map[string]string{"DB_EXTRAS": "sslmode=sometimes"}, nil, "DB_EXTRAS", ""},
		{"extras with a bad timeout", map[string]string{"DB_EXTRAS": "connect_timeout=soon"}, nil, "DB_EXTRAS", ""},
		{"pool size negative", map[string]string{"SQLALCHEMY_POOL_SIZE": "-1"}, nil, "SQLALCHEMY_POOL_SIZE", ""},
		{"overflow not a number", map[string]string{"SQLALCHEMY_MAX_OVERFLOW": "ten"}, nil, "SQLALCHEMY_MAX_OVERFLOW", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vars := difyBase(c.vars)
			for _, name := range c.unset {
				delete(vars, name)
			}
			_, _, err := load(t, vars)
			wantVarError(t, err, c.wantVar)
			if c.mention != "" && !strings.Contains(err.Error(), c.mention) {
				t.Errorf("%v: want the line to name %s too", err, c.mention)
			}
		})
	}
}

func parseDSN(t *testing.T, dsn string) *pgconn.Config {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("DSN does not parse: %v", err)
	}
	return cfg
}

// writeTLSFiles writes a CA certificate, a client certificate and its key signed by it, and one file holding both.
func writeTLSFiles(t *testing.T, dir string) (ca, cert, key, both string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, clientKey := newKey(), newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clientDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "authgate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caTmpl, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientDER})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	files := map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM, "both.pem": append(certPEM, keyPEM...)}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"),
		filepath.Join(dir, "both.pem")
}
