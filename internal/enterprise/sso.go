package enterprise

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// SSOInitiate hands a signed SSO-state envelope to the enterprise service (POST /device-flow/sso-initiate with
// {"signed_state": ...}) and returns the identity-provider URL it answers with ({"url": ...}). An answer that is not
// an absolute http(s) URL is ErrUnavailable: the caller redirects a browser to it.
func (c *Client) SSOInitiate(ctx context.Context, signedState string) (string, error) {
	if signedState == "" {
		return "", fmt.Errorf("%w: empty signed state", ErrUnavailable)
	}
	raw, err := c.call(ctx, http.MethodPost, "/device-flow/sso-initiate", nil, map[string]string{"signed_state": signedState})
	if err != nil {
		return "", err
	}
	var body struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return "", fmt.Errorf("%w: POST /device-flow/sso-initiate: %w", ErrUnavailable, err)
	}
	u, err := url.Parse(body.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("%w: POST /device-flow/sso-initiate: answer is not an absolute http(s) URL", ErrUnavailable)
	}
	return u.String(), nil
}
