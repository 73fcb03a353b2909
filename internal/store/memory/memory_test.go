package memory

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/storetest"
	"github.com/authgate/authgate/internal/tokens"
)

func TestTokenStoreConformance(t *testing.T) {
	storetest.RunTokenStore(t, func(t *testing.T) tokens.Store { return New() })
}

func TestDirectoryConformance(t *testing.T) {
	storetest.RunDirectory(t, func(t *testing.T, f dirfixture.Fixture) directory.Directory {
		s := New()
		s.Seed(f)
		return s
	})
}

func TestLookupWithAccountConformance(t *testing.T) {
	storetest.RunLookupWithAccount(t, func(t *testing.T, f dirfixture.Fixture) storetest.TokenAccountStore {
		s := New()
		s.Seed(f)
		return s
	})
}

// The Postgres adapter's advisory lock is tested against a second session; here the stand-in lock is held directly.
func TestPruneBusyWhileAnotherPruneRuns(t *testing.T) {
	s := New()
	s.pruning.Lock()
	_, err := s.Prune(context.Background(), time.Now(), 10)
	s.pruning.Unlock()
	if !errors.Is(err, tokens.ErrPruneBusy) {
		t.Fatalf("Prune while another runs: err = %v, want ErrPruneBusy", err)
	}
	if _, err := s.Prune(context.Background(), time.Now(), 10); err != nil {
		t.Fatalf("Prune after the other finished: %v", err)
	}
}
