package config_test

import (
	"testing"
	"time"

	"github.com/authgate/authgate/internal/config"
)

func TestIdentityAssertionIsOffByDefault(t *testing.T) {
	c, _, err := config.LoadExtauthz(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.IdentityAssertion{Audience: config.DefaultIdentityAssertionAudience, Lifetime: 5 * time.Minute}
	if c.IdentityAssertion != want {
		t.Errorf("IdentityAssertion = %+v, want %+v", c.IdentityAssertion, want)
	}
}

func TestIdentityAssertionSettings(t *testing.T) {
	c, _, err := config.LoadExtauthz(env(map[string]string{"IDENTITY_ASSERTION": "true",
		"IDENTITY_ASSERTION_KEY_FILE": "/keys/current.pem", "IDENTITY_ASSERTION_PREVIOUS_KEY_FILE": "/keys/previous.pem",
		"IDENTITY_ASSERTION_AUDIENCE": "https://dify.example.com/api", "IDENTITY_ASSERTION_TTL": "2m"}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.IdentityAssertion{Enabled: true, KeyFile: "/keys/current.pem", PreviousKeyFile: "/keys/previous.pem",
		Audience: "https://dify.example.com/api", Lifetime: 2 * time.Minute}
	if c.IdentityAssertion != want {
		t.Errorf("IdentityAssertion = %+v, want %+v", c.IdentityAssertion, want)
	}
}

func TestIdentityAssertionBadSettingsNameTheVariable(t *testing.T) {
	for name, c := range map[string]struct {
		env     map[string]string
		wantVar string
	}{
		"not a boolean":  {map[string]string{"IDENTITY_ASSERTION": "sure"}, "IDENTITY_ASSERTION"},
		"no key file":    {map[string]string{"IDENTITY_ASSERTION": "true"}, "IDENTITY_ASSERTION_KEY_FILE"},
		"lifetime short": {map[string]string{"IDENTITY_ASSERTION": "true", "IDENTITY_ASSERTION_KEY_FILE": "/k", "IDENTITY_ASSERTION_TTL": "5s"}, "IDENTITY_ASSERTION_TTL"},
		"lifetime long":  {map[string]string{"IDENTITY_ASSERTION": "true", "IDENTITY_ASSERTION_KEY_FILE": "/k", "IDENTITY_ASSERTION_TTL": "2h"}, "IDENTITY_ASSERTION_TTL"},
		"not a duration": {map[string]string{"IDENTITY_ASSERTION_TTL": "five minutes"}, "IDENTITY_ASSERTION_TTL"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := config.LoadExtauthz(env(c.env))
			wantVarError(t, err, c.wantVar)
		})
	}
}
