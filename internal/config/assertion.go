package config

import "time"

// DefaultIdentityAssertionAudience is the aud extauthz's assertions carry unless IDENTITY_ASSERTION_AUDIENCE says otherwise:
// the upstream behind the proxy, Dify's api.
const DefaultIdentityAssertionAudience = "dify-api"

// IdentityAssertion configures the signed identity assertion extauthz adds to allowed requests (docs/security.md).
type IdentityAssertion struct {
	Enabled bool // IDENTITY_ASSERTION
	// KeyFile (IDENTITY_ASSERTION_KEY_FILE) is a PEM EC P-256 private key, mounted from a Secret.
	KeyFile string
	// PreviousKeyFile (IDENTITY_ASSERTION_PREVIOUS_KEY_FILE) is the key a rotation retired: its public key stays in the JWKS so
	// that assertions it signed verify until they expire. Empty: none.
	PreviousKeyFile string
	Audience        string        // IDENTITY_ASSERTION_AUDIENCE
	Lifetime        time.Duration // IDENTITY_ASSERTION_TTL
}

func readIdentityAssertion(r *reader) IdentityAssertion {
	a := IdentityAssertion{
		Enabled:         r.Bool("IDENTITY_ASSERTION", false),
		KeyFile:         r.String("IDENTITY_ASSERTION_KEY_FILE", ""),
		PreviousKeyFile: r.String("IDENTITY_ASSERTION_PREVIOUS_KEY_FILE", ""),
		Audience:        r.String("IDENTITY_ASSERTION_AUDIENCE", DefaultIdentityAssertionAudience),
		Lifetime:        r.Duration("IDENTITY_ASSERTION_TTL", 5*time.Minute),
	}
	if !a.Enabled {
		return a
	}
	if a.KeyFile == "" {
		r.fail("IDENTITY_ASSERTION_KEY_FILE", "required when IDENTITY_ASSERTION=true (a PEM EC P-256 private key)")
	}
	// Long enough for a request to reach the upstream after the cached assertion was signed (it is re-signed with half its
	// lifetime left), short enough that a stolen one is soon worthless.
	if a.Lifetime < 30*time.Second || a.Lifetime > time.Hour {
		r.fail("IDENTITY_ASSERTION_TTL", "%s is outside 30s..1h", a.Lifetime)
	}
	return a
}
