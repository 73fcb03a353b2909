package enterprise

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// License statuses as Dify's LicenseStatus enum spells them. Callers allow-list: only Active and Expiring pass.
const (
	LicenseNone     = "none"
	LicenseInactive = "inactive"
	LicenseActive   = "active"
	LicenseExpiring = "expiring"
	LicenseExpired  = "expired"
	LicenseLost     = "lost"
)

type licenseCache struct {
	mu        sync.Mutex
	status    string
	fetchedAt time.Time
}

// infoResponse is the part of GET /info that matters here. Dify reads "License" (older releases "license").
type infoResponse struct {
	License       *licenseInfo `json:"License"`
	LegacyLicense *licenseInfo `json:"license"`
}

type licenseInfo struct {
	Status string `json:"status"`
}

// LicenseStatus returns the license status of the deployment, reusing an answer for LicenseTTL (60 s). Concurrent
// callers on an expired cache share one request. A response without a license reports LicenseNone, as Dify does.
func (c *Client) LicenseStatus(ctx context.Context) (string, error) {
	if status, ok := c.cachedLicense(); ok {
		return status, nil
	}
	// The shared fetch must not die with the first caller's ctx; it is still bounded by HTTPTimeout, and each caller
	// stops waiting at its own deadline.
	ch := c.licenseGroup.DoChan("license", func() (any, error) {
		return c.fetchLicense(context.WithoutCancel(ctx))
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("%w: GET /info: %w", ErrUnavailable, ctx.Err())
	}
}

func (c *Client) cachedLicense() (string, bool) {
	c.license.mu.Lock()
	defer c.license.mu.Unlock()
	if c.license.status == "" || time.Since(c.license.fetchedAt) >= c.opts.LicenseTTL {
		return "", false
	}
	return c.license.status, true
}

func (c *Client) fetchLicense(ctx context.Context) (string, error) {
	raw, err := c.call(ctx, http.MethodGet, "/info", nil, nil)
	if err != nil {
		return "", err
	}
	var info infoResponse
	if err := json.Unmarshal(raw, &info); err != nil {
		return "", fmt.Errorf("%w: GET /info: %w", ErrUnavailable, err)
	}
	status := LicenseNone
	switch {
	case info.License != nil && info.License.Status != "":
		status = info.License.Status
	case info.LegacyLicense != nil && info.LegacyLicense.Status != "":
		status = info.LegacyLicense.Status
	}
	c.license.mu.Lock()
	c.license.status, c.license.fetchedAt = status, time.Now()
	c.license.mu.Unlock()
	return status, nil
}
