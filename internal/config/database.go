package config

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Database is Dify's Postgres database: DATABASE_URL when it is set, otherwise Dify's DB_* variables with Dify's meanings
// and defaults. DSN is what internal/store/postgres.OpenPool takes.
type Database struct {
	// URL is DATABASE_URL. When set, nothing below is read.
	URL string

	Host     string // DB_HOST
	Port     int    // DB_PORT
	Username string // DB_USERNAME
	Password string // DB_PASSWORD
	Name     string // DB_DATABASE
	// Params are the connection parameters: DB_EXTRAS (libpq's key=value&...), the session time zone
	// (DB_SESSION_TIMEZONE_OVERRIDE, as -c timezone= in options) and the pool size (pool_max_conns).
	Params url.Values
}

// DSN is the connection string for OpenPool.
func (d Database) DSN() string {
	if d.URL != "" {
		return d.URL
	}
	u := url.URL{Scheme: "postgres", Path: "/" + d.Name}
	if d.Password != "" {
		u.User = url.UserPassword(d.Username, d.Password)
	} else {
		u.User = url.User(d.Username)
	}
	q := url.Values{}
	for k, v := range d.Params {
		q[k] = v
	}
	if strings.HasPrefix(d.Host, "/") { // a Unix socket directory, which a URL's host cannot hold
		q.Set("host", d.Host)
		q.Set("port", strconv.Itoa(d.Port))
	} else {
		u.Host = joinHostPort(d.Host, d.Port)
	}
	u.RawQuery = encodeParams(q)
	return u.String()
}

// encodeParams writes the query as pgx reads it: percent-encoding only, so a space is %20, never the form encoding's "+".
func encodeParams(q url.Values) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(escapeParam(k) + "=" + escapeParam(v))
		}
	}
	return b.String()
}

func escapeParam(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// Var names the variable an error about connecting should point the operator to: DATABASE_URL, or DB_HOST for settings
// built from DB_* (which LoadExtauthz and the other loaders have already parsed).
func (d Database) Var() string {
	if d.URL != "" {
		return envDatabaseURL
	}
	return envDBHost
}

// String describes the database for logs, without the password.
func (d Database) String() string {
	dsn := d.DSN()
	u, err := url.Parse(dsn)
	return "postgres " + shownURL(dsn, u, err)
}

const (
	envDatabaseURL      = "DATABASE_URL"
	envDBType           = "DB_TYPE"
	envDBHost           = "DB_HOST"
	envDBPort           = "DB_PORT"
	envDBUsername       = "DB_USERNAME"
	envDBPassword       = "DB_PASSWORD"
	envDBDatabase       = "DB_DATABASE"
	envDBCharset        = "DB_CHARSET"
	envDBExtras         = "DB_EXTRAS"
	envDBTimezone       = "DB_SESSION_TIMEZONE_OVERRIDE"
	envPoolSize         = "SQLALCHEMY_POOL_SIZE"
	envPoolMaxOverflow  = "SQLALCHEMY_MAX_OVERFLOW"
	defaultPoolOverflow = 10 // Dify's SQLALCHEMY_MAX_OVERFLOW
)

// libpqOnly are libpq connection parameters that pgx does not know: it would send them to the server as run-time settings,
// which the server refuses, so they are dropped with a warning. Go's dialer keeps TCP keep-alives on by itself.
var libpqOnly = map[string]bool{
	"keepalives": true, "keepalives_idle": true, "keepalives_interval": true, "keepalives_count": true,
	"tcp_user_timeout": true, "gssencmode": true, "sslcompression": true, "requiressl": true, "sslcrl": true,
	"sslcrldir": true, "requirepeer": true, "ssl_min_protocol_version": true, "ssl_max_protocol_version": true,
	"gsslib": true, "gssdelegation": true, "load_balance_hosts": true, "hostaddr": true,
	"fallback_application_name": true, "replication": true,
}

func readDatabase(r *reader) Database {
	if url, ok := r.raw(envDatabaseURL); ok {
		return Database{URL: url}
	}
	// Read whole, as Dify's settings are, before deciding: a value that would stop Dify's api stops authgate too.
	dbType := r.String(envDBType, "postgresql")
	host, hostSet := r.raw(envDBHost)
	d := Database{
		Host:     host,
		Port:     r.Int(envDBPort, 5432, 1, 65535),
		Username: r.String(envDBUsername, "postgres"),
		Password: r.String(envDBPassword, ""),
		Name:     r.String(envDBDatabase, "dify"),
		Params:   url.Values{},
	}
	charset := r.String(envDBCharset, "")
	extras := r.String(envDBExtras, "")
	tzRaw, tzSet := r.lookup(envDBTimezone)
	timezone := strings.TrimSpace(tzRaw)
	if !tzSet {
		timezone = "UTC" // Dify's default; set it empty to leave the server's time zone alone
	}
	_, poolSet := r.raw(envPoolSize)
	size := r.Int(envPoolSize, 0, 0, 10_000)
	overflow := r.Int(envPoolMaxOverflow, defaultPoolOverflow, 0, 10_000)

	if dbType != "postgresql" {
		r.fail(envDBType, "authgate needs postgresql: %q", dbType)
		return d
	}
	if !hostSet {
		r.fail(envDatabaseURL, "required unless %s is set", envDBHost)
		return d
	}
	if d.Name == "" || strings.ContainsAny(d.Name, "/?#") {
		r.fail(envDBDatabase, "not a database name: %q", d.Name)
	}
	switch strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(charset)) {
	case "", "utf8", "unicode": // pgx speaks UTF-8 only, which is also the default
	default:
		r.fail(envDBCharset, "authgate needs UTF8: %q", charset)
	}
	if extras != "" {
		params, err := url.ParseQuery(extras)
		if err != nil {
			r.fail(envDBExtras, "not a key=value&... list of connection parameters")
			return d
		}
		for _, k := range slices.Sorted(maps.Keys(params)) {
			v := params[k]
			switch {
			case libpqOnly[k]:
				r.warn(envDBExtras, k+" ignored: a libpq parameter pgx does not support")
			case k == "client_encoding":
				r.warn(envDBExtras, "client_encoding ignored: pgx speaks UTF8")
			default:
				d.Params[k] = v
			}
		}
	}
	// As Dify does: the session time zone joins any options from DB_EXTRAS.
	if timezone != "" {
		opt := "-c timezone=" + timezone
		if o := strings.TrimSpace(d.Params.Get("options")); o != "" {
			opt = o + " " + opt
		}
		d.Params.Set("options", opt)
	}
	switch {
	case poolSet && size == 0:
		r.warn(envPoolSize, "0 (unbounded in SQLAlchemy) is not supported: the pool keeps authgate's default size")
	case poolSet:
		// SQLAlchemy's cap is the pool plus its overflow; pgx's pool has one cap.
		d.Params.Set("pool_max_conns", strconv.Itoa(size+overflow))
	}
	if r.err == nil {
		if _, err := pgconn.ParseConfig(d.DSN()); err != nil {
			r.fail(envDBExtras, "the connection settings built from DB_* do not parse: %s", parseReason(err))
		}
	}
	return d
}

// parseReason is pgx's reason without the connection string it quotes (redacted, but long and beside the point).
func parseReason(err error) string {
	s := err.Error()
	if i := strings.Index(s, "`: "); i >= 0 {
		return s[i+3:]
	}
	return "invalid connection parameters"
}
