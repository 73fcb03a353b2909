package tokens

import (
	"context"
	"log/slog"
	"time"

	"github.com/authgate/authgate/internal/audit"
)

// Expirer is the part of Store that HardExpire uses.
type Expirer interface {
	HardExpire(ctx context.Context, id string, now time.Time) (hit bool, err error)
}

// HardExpire takes a token presented past its expiry out of service, the one way both services do it: the store's
// compare-and-set marks the row expired and records its hash as taken out of service (reason expired) in the same statement,
// and the one caller whose compare-and-set hit the row writes the oauth.token_expired audit event. hit tells that caller to
// do its own follow-up (a metric, publishing the tombstone); a caller that lost the race, or found the row already dead,
// gets false and nothing is written twice.
func HardExpire(ctx context.Context, store Expirer, logger *slog.Logger, t Token, now time.Time) (hit bool, err error) {
	hit, err = store.HardExpire(ctx, t.ID, now)
	if err != nil || !hit {
		return false, err
	}
	audit.Log(ctx, logger, audit.TokenExpired, "token_id", t.ID, "client_id", t.ClientID, "subject_email", t.SubjectEmail,
		"subject_issuer", t.SubjectIssuer, "account_id", t.AccountID)
	return true, nil
}
