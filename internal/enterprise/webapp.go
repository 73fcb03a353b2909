package enterprise

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Web-app access modes as Dify's WebAppSettings.access_mode spells them.
const (
	AccessPublic      = "public"
	AccessPrivate     = "private"
	AccessPrivateAll  = "private_all"
	AccessSSOVerified = "sso_verified"
)

// WebAppAccessMode returns the access mode of an app (GET /webapp/access-mode/id?appId=). As in Dify, an answer
// without accessMode means AccessPrivate and an empty answer is an error.
func (c *Client) WebAppAccessMode(ctx context.Context, appID string) (string, error) {
	if appID == "" {
		return "", fmt.Errorf("%w: empty app id", ErrUnavailable)
	}
	raw, err := c.call(ctx, http.MethodGet, "/webapp/access-mode/id", url.Values{"appId": {appID}}, nil)
	if err != nil {
		return "", err
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil || len(body) == 0 {
		return "", fmt.Errorf("%w: GET /webapp/access-mode/id: empty or malformed answer", ErrUnavailable)
	}
	mode := AccessPrivate
	if v, ok := body["accessMode"]; ok {
		if err := json.Unmarshal(v, &mode); err != nil || mode == "" {
			return "", fmt.Errorf("%w: GET /webapp/access-mode/id: malformed accessMode", ErrUnavailable)
		}
	}
	return mode, nil
}

// IsUserAllowed reports whether the user may use the app under its access mode (GET /webapp/permission?userId=&appId=,
// answer {"result": bool}; a missing result is false, as in Dify).
func (c *Client) IsUserAllowed(ctx context.Context, userID, appID string) (bool, error) {
	if userID == "" || appID == "" {
		return false, fmt.Errorf("%w: empty user or app id", ErrUnavailable)
	}
	raw, err := c.call(ctx, http.MethodGet, "/webapp/permission", url.Values{"userId": {userID}, "appId": {appID}}, nil)
	if err != nil {
		return false, err
	}
	var body struct {
		Result bool `json:"result"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return false, fmt.Errorf("%w: GET /webapp/permission: %w", ErrUnavailable, err)
	}
	return body.Result, nil
}
