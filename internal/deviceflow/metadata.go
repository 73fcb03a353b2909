package deviceflow

import "net/http"

// authServerMetadata is RFC 8414 §2 metadata. authorization_endpoint is omitted: no supported grant uses it.
type authServerMetadata struct {
	Issuer                                 string   `json:"issuer"`
	TokenEndpoint                          string   `json:"token_endpoint"`
	DeviceAuthorizationEndpoint            string   `json:"device_authorization_endpoint"`
	RevocationEndpoint                     string   `json:"revocation_endpoint"`
	ResponseTypesSupported                 []string `json:"response_types_supported"`
	GrantTypesSupported                    []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported      []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported []string `json:"revocation_endpoint_auth_methods_supported"`
}

func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) error {
	issuer := s.cfg.ConsoleAPIURL + apiPrefix
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, authServerMetadata{
		Issuer:                                 issuer,
		TokenEndpoint:                          issuer + "/oauth/device/token",
		DeviceAuthorizationEndpoint:            issuer + "/oauth/device/code",
		RevocationEndpoint:                     issuer + "/oauth/revoke",
		ResponseTypesSupported:                 []string{},
		GrantTypesSupported:                    []string{deviceCodeGrant},
		TokenEndpointAuthMethodsSupported:      []string{"none"},
		RevocationEndpointAuthMethodsSupported: []string{"none"},
	})
	return nil
}
