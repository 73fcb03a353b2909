package tokencache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/testenv"
)

func newHash() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func accountEntry() Entry {
	return Entry{
		SubjectEmail:    "ada@example.com",
		SubjectIssuer:   "dify:account",
		AccountID:       "5a4f0d1e-8c9b-4f3e-9a57-3b7c2f1e0d9a",
		ClientID:        "difyctl",
		TokenID:         "0e0b2f7c-1d2e-4c3b-8a9f-6e5d4c3b2a10",
		ExpiresAt:       time.Now().Add(14 * 24 * time.Hour).UTC().Truncate(time.Microsecond),
		VerifiedTenants: map[string]bool{},
	}
}

// runLocal starts c.Run for the test and waits until the local layer follows the stream.
func runLocal(t testing.TB, c *Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testenv.Eventually(t, 5*time.Second, "local layer to follow the stream", func() bool {
		return time.Now().UnixNano() < c.local.freshUntil.Load()
	})
}
