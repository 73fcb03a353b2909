package extauthz

import (
	"crypto/ecdsa"
	"maps"
	"net/http"
	"slices"

	"github.com/authgate/authgate/internal/assertion"
	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/pipeline"
)

// newAssertionSigner loads IDENTITY_ASSERTION's keys; nil when the assertion is off. A key that cannot be used stops
// start-up naming its variable.
func newAssertionSigner(cfg config.IdentityAssertion) (*assertion.Signer, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	key, err := assertion.LoadPrivateKey(cfg.KeyFile)
	if err != nil {
		return nil, &config.Error{Var: "IDENTITY_ASSERTION_KEY_FILE", Reason: err.Error()}
	}
	var previous []*ecdsa.PublicKey
	if cfg.PreviousKeyFile != "" {
		pub, err := assertion.LoadPublicKey(cfg.PreviousKeyFile)
		if err != nil {
			return nil, &config.Error{Var: "IDENTITY_ASSERTION_PREVIOUS_KEY_FILE", Reason: err.Error()}
		}
		previous = append(previous, pub)
	}
	s, err := assertion.New(assertion.Options{Key: key, Previous: previous, Audience: cfg.Audience, Lifetime: cfg.Lifetime})
	if err != nil {
		return nil, &config.Error{Var: "IDENTITY_ASSERTION", Reason: err.Error()}
	}
	return s, nil
}

// withJWKS serves the assertion keys next to the admin endpoints; admin alone when the assertion is off.
func withJWKS(admin http.Handler, signer *assertion.Signer) http.Handler {
	if signer == nil {
		return admin
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+assertion.JWKSPath, signer)
	mux.Handle("/", admin)
	return mux
}

// addAssertion adds the signed identity to an allow. The pipeline removes any x-authgate-assertion a client sent (it
// removes every x-authgate-* header it does not set); an allow that sets one must not also remove it, as Envoy applies
// headers_to_remove after the headers it sets. An allow without a subject (auth: none) carries none, and removes one.
// A signature that cannot be made is a 503: the upstream would refuse the request anyway.
func (s *Server) addAssertion(d pipeline.Decision) pipeline.Decision {
	token, err := s.assertion.Assert(d.SetHeaders)
	if err != nil {
		s.logger.Error("identity assertion not signed; denying 503", "error", err)
		metadata := maps.Clone(d.Metadata)
		if metadata == nil {
			metadata = map[string]string{}
		}
		metadata["error"] = string(pipeline.CodeAuthUnavailable)
		return pipeline.Decision{Status: 503, Code: pipeline.CodeAuthUnavailable, Route: d.Route, Metadata: metadata,
			Message: "authentication is temporarily unavailable; retry shortly"}
	}
	if token == "" {
		if !slices.Contains(d.RemoveHeaders, assertion.Header) {
			d.RemoveHeaders = append(slices.Clip(d.RemoveHeaders), assertion.Header)
		}
		return d
	}
	d.SetHeaders = append(slices.Clip(d.SetHeaders), pipeline.Header{Name: assertion.Header, Value: token})
	if slices.Contains(d.RemoveHeaders, assertion.Header) {
		d.RemoveHeaders = slices.DeleteFunc(slices.Clone(d.RemoveHeaders), func(n string) bool { return n == assertion.Header })
	}
	return d
}
