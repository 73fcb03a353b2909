package config

// MinSecretKeyLen is the shortest SECRET_KEY deviceflow accepts: it is the HS256 key of Dify's console sessions, CSRF tokens
// and SSO envelopes, and RFC 7518 §3.2 asks for a key at least as long as the hash (256 bits). Dify's own advice,
// `openssl rand -base64 42`, gives 56 bytes.
const MinSecretKeyLen = 32

// difySampleSecretKey is the SECRET_KEY of Dify's docker/.env.example, also the default of its docker-compose.yaml. Every
// deployment that kept it signs console sessions with a key anyone can read, so anyone can sign in to it as anyone.
const difySampleSecretKey = "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"

// LoadOption adjusts a loader's validation.
type LoadOption func(*loadOptions)

type loadOptions struct{ devStack bool }

// DevStack is for cmd/devstack only: it accepts a SECRET_KEY that is short or public, because the dev stack signs its demo
// sessions with a published key, listens on loopback and holds nothing worth protecting.
func DevStack() LoadOption { return func(o *loadOptions) { o.devStack = true } }

func applyOptions(opts []LoadOption) loadOptions {
	var o loadOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// secretKey reads a required SECRET_KEY and refuses one an attacker could know or guess. The message never quotes the key.
func (r *reader) secretKey(name string, o loadOptions) string {
	v := r.Required(name)
	switch {
	case v == "" || o.devStack:
	case v == difySampleSecretKey:
		r.fail(name, "is the sample value from Dify's .env.example, which anyone can use to sign console sessions; "+
			"set a new key in Dify and here (openssl rand -base64 42)")
	case len(v) < MinSecretKeyLen:
		r.fail(name, "is %d bytes; at least %d are required (openssl rand -base64 42), in Dify and here", len(v),
			MinSecretKeyLen)
	}
	return v
}
