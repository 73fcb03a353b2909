package testenv

import "testing"

func TestWithDBKeepsSchemeCredentialsAndOptions(t *testing.T) {
	cases := map[string]string{
		"redis://127.0.0.1:6379/0":                               "redis://127.0.0.1:6379/5",
		"redis://127.0.0.1:6379":                                 "redis://127.0.0.1:6379/5",
		"rediss://:s3cret@cache.internal:6380/0?dial_timeout=3s": "rediss://:s3cret@cache.internal:6380/5?dial_timeout=3s",
		"redis://user:pw@10.0.0.1:6379/2":                        "redis://user:pw@10.0.0.1:6379/5",
	}
	for base, want := range cases {
		if got := withDB(base, 5); got != want {
			t.Errorf("withDB(%q, 5) = %q, want %q", base, got, want)
		}
	}
}
