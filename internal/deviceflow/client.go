package deviceflow

import (
	"net/http"
	"net/url"
	"strings"
)

// clientAuth is how the request named its OAuth client.
type clientAuth struct {
	ID string
	// ViaBasic: the client id came in an HTTP Basic Authorization header (RFC 6749 §2.3.1).
	ViaBasic bool
}

// clientFrom reads client_id from HTTP Basic (with an empty secret: every known client is public) or from the body. When
// both are present they must agree. Any Authorization scheme other than Basic is ignored here.
func clientFrom(r *http.Request, p params) (clientAuth, *apiError) {
	fromBody, apiErr := p.str("client_id")
	if apiErr != nil {
		return clientAuth{}, apiErr
	}
	user, secret, ok := basicAuth(r)
	if !ok {
		return clientAuth{ID: fromBody}, nil
	}
	if secret != "" {
		return clientAuth{}, errorf(http.StatusBadRequest, codeInvalidClient, "public clients authenticate with an empty secret")
	}
	if fromBody != "" && fromBody != user {
		return clientAuth{}, errorf(http.StatusBadRequest, codeInvalidRequest, "client_id in the body and in Authorization differ")
	}
	return clientAuth{ID: user, ViaBasic: true}, nil
}

// basicAuth decodes HTTP Basic credentials, which RFC 6749 §2.3.1 form-encodes before base64.
func basicAuth(r *http.Request) (user, secret string, ok bool) {
	if !strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), "basic ") {
		return "", "", false
	}
	rawUser, rawSecret, ok := r.BasicAuth()
	if !ok {
		return "", "", false
	}
	user, errU := url.QueryUnescape(rawUser)
	secret, errS := url.QueryUnescape(rawSecret)
	if errU != nil || errS != nil {
		return rawUser, rawSecret, true
	}
	return user, secret, true
}

// knownClient reads the client as clientFrom does and requires its id to be one of OPENAPI_KNOWN_CLIENT_IDS.
func (s *Server) knownClient(r *http.Request, p params) (clientAuth, *apiError) {
	c, apiErr := clientFrom(r, p)
	switch {
	case apiErr != nil:
		return clientAuth{}, apiErr
	case c.ID == "":
		return clientAuth{}, errorf(http.StatusBadRequest, codeInvalidClient, "client_id is required")
	case !s.clients[c.ID]:
		return clientAuth{}, errorf(http.StatusBadRequest, codeInvalidClient, "unknown client_id")
	}
	return c, nil
}
