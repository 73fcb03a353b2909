package config_test

import (
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/config"
)

// testSecretKey is long enough and not a published value.
const testSecretKey = "config-test-secret-key-0123456789abcdef"

// TestWeakSecretKeysAreRefused: a SECRET_KEY anyone knows (Dify's .env.example sample) or can brute-force (a few bytes)
// lets anyone sign console sessions, so deviceflow stops at start-up with one line naming the variable and never quoting
// the key. The dev stack, which publishes its key on purpose, may use one.
func TestWeakSecretKeysAreRefused(t *testing.T) {
	for name, key := range map[string]string{
		"Dify's .env.example sample": "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U",
		"the sample, padded":         "  sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U\n",
		"a few bytes":                "k",
		"31 bytes":                   strings.Repeat("x", config.MinSecretKeyLen-1),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := config.LoadDeviceflow(env(map[string]string{"SECRET_KEY": key}))
			wantVarError(t, err, "SECRET_KEY")
			if k := strings.TrimSpace(key); len(k) > 3 && strings.Contains(err.Error(), k) {
				t.Errorf("the error quotes the key: %v", err)
			}
			if _, _, err := config.LoadDeviceflow(env(map[string]string{"SECRET_KEY": key}), config.DevStack()); err != nil {
				t.Errorf("the dev stack refused it: %v", err)
			}
		})
	}
	for _, key := range []string{strings.Repeat("x", config.MinSecretKeyLen), testSecretKey} {
		if c, _, err := config.LoadDeviceflow(env(map[string]string{"SECRET_KEY": key})); err != nil || c.SecretKey != key {
			t.Errorf("a %d-byte key: %v", len(key), err)
		}
	}
	// Extauthz does not read it at all.
	if _, _, err := config.LoadExtauthz(env(map[string]string{"SECRET_KEY": "k"})); err != nil {
		t.Errorf("extauthz: %v", err)
	}
	_, _, err := config.LoadDeviceflow(env(map[string]string{"SECRET_KEY": ""}), config.DevStack())
	wantVarError(t, err, "SECRET_KEY") // still required in the dev stack's own loader
}
