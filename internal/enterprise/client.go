// Package enterprise is the client of Dify's enterprise service (license, web-app access control, SSO).
package enterprise

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ErrUnavailable wraps every failure to get an answer from the enterprise service: transport errors, timeouts,
// 5xx and unexpected statuses, oversized or malformed bodies, and an open circuit breaker. Callers fail closed on it.
var ErrUnavailable = errors.New("enterprise service unavailable")

// Options tunes the client; zero values take the defaults.
type Options struct {
	HTTPTimeout time.Duration // per call, inside the caller's deadline; default 2 s
	MaxBody     int64         // response size cap in bytes; default 1 MiB
	// Breaker: after BreakerFailures consecutive failures the breaker opens for BreakerOpenFor, then lets one
	// probe through.
	BreakerFailures uint32        // default 5
	BreakerOpenFor  time.Duration // default 10 s
	HTTPClient      *http.Client  // transport override for tests; redirects are never followed regardless
}

// Client calls Dify's enterprise service.
type Client struct {
	baseURL   string
	secretKey string
	opts      Options
}

// New returns a client for the service at baseURL (ENTERPRISE_API_URL) that authenticates with secretKey
// (ENTERPRISE_API_SECRET_KEY).
func New(baseURL, secretKey string, opts Options) *Client {
	return &Client{baseURL: baseURL, secretKey: secretKey, opts: opts}
}

// LicenseStatus returns the license status ("active", "expiring", "expired", "inactive", "lost"), cached 60 s.
func (c *Client) LicenseStatus(ctx context.Context) (string, error) {
	return "", ErrUnavailable
}

// WebAppAccessMode returns the access mode of an app ("public", "private", "private_all", "sso_verified").
func (c *Client) WebAppAccessMode(ctx context.Context, appID string) (string, error) {
	return "", ErrUnavailable
}

// IsUserAllowed reports whether the user may access the app under its access mode.
func (c *Client) IsUserAllowed(ctx context.Context, userID, appID string) (bool, error) {
	return false, ErrUnavailable
}

// SSOInitiate asks the enterprise service where to send the browser to start SSO; signedState comes back with
// the callback.
func (c *Client) SSOInitiate(ctx context.Context, signedState string) (string, error) {
	return "", ErrUnavailable
}
