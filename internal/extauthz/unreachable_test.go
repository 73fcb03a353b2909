package extauthz

import (
	"context"
	"errors"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/tokens"
)

// unreachable stands in for every dependency being down, so the fuzz target exercises the adapter and the parsing
// steps without a network, and every path that needs a dependency must end in a 503 rather than an allow.
type unreachable struct{}

var errDown = errors.New("dependency down")

func (unreachable) Allow(context.Context, string, int, time.Duration) (pipeline.RateDecision, error) {
	return pipeline.RateDecision{}, errDown
}
func (unreachable) Exceeded(context.Context, string, int, time.Duration) (pipeline.RateDecision, error) {
	return pipeline.RateDecision{}, errDown
}
func (unreachable) Add(context.Context, string, time.Duration) error { return errDown }
func (unreachable) Get(context.Context, string) (pipeline.TokenEntry, pipeline.CacheStatus, error) {
	return pipeline.TokenEntry{}, pipeline.CacheMiss, errDown
}
func (unreachable) Local(string) (pipeline.TokenEntry, bool)                { return pipeline.TokenEntry{}, false }
func (unreachable) Fill(context.Context, string, pipeline.TokenEntry) error { return errDown }
func (unreachable) MarkUnknown(context.Context, string) error               { return errDown }
func (unreachable) RecordVerdict(context.Context, string, string, bool) error {
	return errDown
}
func (unreachable) LookupByHash(context.Context, string) (tokens.Token, error) {
	return tokens.Token{}, errDown
}
func (unreachable) HardExpire(context.Context, string, time.Time) (bool, error) {
	return false, errDown
}
func (unreachable) AppWithTenant(context.Context, string) (directory.App, directory.Tenant, bool, error) {
	return directory.App{}, directory.Tenant{}, false, errDown
}
func (unreachable) Account(context.Context, string) (directory.Account, error) {
	return directory.Account{}, errDown
}
func (unreachable) IsActiveMember(context.Context, string, string) (bool, error) {
	return false, errDown
}
