// Package enterprise is the client of Dify's enterprise service: license status, web-app access control and the
// device-flow SSO hand-off. It speaks Dify's wire format (api/services/enterprise in langgenius/dify) and fails
// closed: every failure is ErrUnavailable, which callers turn into a deny.
package enterprise

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/sync/singleflight"
)

// ErrUnavailable wraps every failure to get a usable answer from the enterprise service: transport errors,
// timeouts, non-200 statuses (redirects are never followed), oversized or malformed bodies, and an open circuit
// breaker. Callers fail closed on it.
var ErrUnavailable = errors.New("enterprise service unavailable")

// secretHeader is the header Dify's EnterpriseRequest authenticates with.
const secretHeader = "Enterprise-Api-Secret-Key"

// Options tunes the client; zero values take the defaults.
type Options struct {
	// HTTPTimeout bounds each call; the caller's ctx deadline still applies when it is earlier. Default 2 s.
	HTTPTimeout time.Duration
	// MaxBody caps the response body in bytes; a larger body is ErrUnavailable. Default 1 MiB.
	MaxBody int64
	// BreakerFailures consecutive failures open the breaker; while open, calls fail at once without touching the
	// network. Default 5.
	BreakerFailures uint32
	// BreakerOpenFor is how long the breaker stays open before it lets one probe call through. Default 5 s.
	BreakerOpenFor time.Duration
	// OnBreakerChange, if set, is told every breaker transition ("closed", "open", "half-open"), for logs and metrics.
	OnBreakerChange func(from, to string)
	// LicenseTTL is how long a license status is reused. Default 60 s (docs/reference/check.md, license step).
	LicenseTTL time.Duration
	// Transport overrides the HTTP transport (tests, custom TLS). Redirects are never followed whatever it does.
	Transport http.RoundTripper
}

func (o Options) withDefaults() Options {
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = 2 * time.Second
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = 5
	}
	if o.BreakerOpenFor <= 0 {
		o.BreakerOpenFor = 5 * time.Second
	}
	if o.LicenseTTL <= 0 {
		o.LicenseTTL = 60 * time.Second
	}
	if o.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// extauthz calls the service from many concurrent Checks; keep enough warm connections for them.
		t.MaxIdleConnsPerHost = 64
		o.Transport = t
	}
	return o
}

// Client calls Dify's enterprise service. It is safe for concurrent use.
type Client struct {
	baseURL   string
	secretKey string
	opts      Options
	http      *http.Client
	breaker   *gobreaker.CircuitBreaker[[]byte]

	license      licenseCache
	licenseGroup singleflight.Group
}

// New returns a client for the service at baseURL (ENTERPRISE_API_URL; endpoint paths are appended to it as Dify
// does) that authenticates with secretKey (ENTERPRISE_API_SECRET_KEY).
func New(baseURL, secretKey string, opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{
		baseURL:   strings.TrimRight(baseURL, "/"),
		secretKey: secretKey,
		opts:      opts,
		http: &http.Client{
			Transport: opts.Transport,
			// A redirect from an internal service is a misconfiguration or an attack (it would carry the secret
			// header elsewhere); hand the 3xx back so it counts as a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.breaker = gobreaker.NewCircuitBreaker[[]byte](gobreaker.Settings{
		Name:        "enterprise",
		MaxRequests: 1,
		Timeout:     opts.BreakerOpenFor,
		ReadyToTrip: func(counts gobreaker.Counts) bool {
			return counts.ConsecutiveFailures >= opts.BreakerFailures
		},
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, errAnswered) },
		// A caller that cancels (its client went away) says nothing about the service's health; see transportError.
		IsExcluded: func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if opts.OnBreakerChange != nil {
				opts.OnBreakerChange(from.String(), to.String())
			}
		},
	})
	return c
}

var (
	// errAnswered marks a refusal the service itself gave (3xx, 4xx): the service is up, so the breaker does not count
	// it, but the caller still gets ErrUnavailable.
	errAnswered = errors.New("unexpected answer")
	// errCallerGone marks a call abandoned because the caller cancelled it.
	errCallerGone = errors.New("caller's context ended")
)

// call sends one request through the breaker and returns the 200 body. Every error wraps ErrUnavailable.
func (c *Client) call(ctx context.Context, method, endpoint string, query url.Values, body any) ([]byte, error) {
	out, err := c.breaker.Execute(func() ([]byte, error) {
		return c.roundTrip(ctx, method, endpoint, query, body)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrUnavailable, method, endpoint, err)
	}
	return out, nil
}

func (c *Client) roundTrip(parent context.Context, method, endpoint string, query url.Values, body any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(parent, c.opts.HTTPTimeout)
	defer cancel()

	target := c.baseURL + endpoint
	if len(query) > 0 {
		target += "?" + query.Encode() // Encode escapes every key and value.
	}
	var reqBody io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		reqBody = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, reqBody)
	if err != nil {
		return nil, err
	}
	req.Header.Set(secretHeader, c.secretKey)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(parent, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused, but never read an unbounded error page.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode >= 500 {
			return nil, fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil, fmt.Errorf("%w: status %d", errAnswered, resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxBody+1))
	if err != nil {
		return nil, transportError(parent, err)
	}
	if int64(len(raw)) > c.opts.MaxBody {
		return nil, fmt.Errorf("response body over %d bytes", c.opts.MaxBody)
	}
	return raw, nil
}

// transportError marks failures caused by the caller cancelling (a client that went away), which say nothing
// about the service. The caller's deadline expiring does count: with a Check deadline far below HTTPTimeout, that is
// how a hung service shows, and it must open the breaker.
func transportError(parent context.Context, err error) error {
	if errors.Is(parent.Err(), context.Canceled) {
		return fmt.Errorf("%w: %w", errCallerGone, err)
	}
	return err
}
