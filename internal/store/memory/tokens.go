// Package memory is an in-process tokens.Store and directory.Directory for the embedded dev run. It passes the same
// conformance suite as the Postgres adapter, so behaviour seen in dev is behaviour in production.
package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/store/internal/rules"
	"github.com/authgate/authgate/internal/tokens"
)

// Store keeps tokens and a directory fixture in memory. The zero value is not usable; call New.
type Store struct {
	mu     sync.Mutex
	byID   map[string]*tokens.Token
	byHash map[string]*tokens.Token // live rows only, as the unique token_hash column
	dir    dirfixture.Fixture
	// revoked is authgate_revoked_tokens: hashes taken out of service, recorded under the same lock as the change.
	revoked map[string]tokens.RevokedHash

	// pruning stands in for the Postgres advisory lock: one prune at a time, others get ErrPruneBusy.
	pruning sync.Mutex
}

var (
	_ tokens.Store        = (*Store)(nil)
	_ directory.Directory = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{byID: map[string]*tokens.Token{}, byHash: map[string]*tokens.Token{}, revoked: map[string]tokens.RevokedHash{}}
}

// Mint implements tokens.Store: the subject's live row for the device is rotated in place under the lock, which is what the
// single statement gives Postgres, and a slot that the partial unique index would refuse is ErrDeviceTaken.
func (s *Store) Mint(ctx context.Context, req tokens.MintRequest) (tokens.Minted, error) {
	row, err := rules.Mint(req)
	if err != nil {
		return tokens.Minted{}, err
	}
	if err := ctx.Err(); err != nil {
		return tokens.Minted{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.byHash[row.TokenHash]; taken {
		return tokens.Minted{}, fmt.Errorf("memory: mint: token hash already in use: %w", tokens.ErrConflict)
	}
	own := s.ownLiveForDevice(row)
	if other := s.slotHolder(row); other != nil && other != own {
		return tokens.Minted{}, fmt.Errorf("memory: mint: %w", tokens.ErrDeviceTaken)
	}
	if t := own; t != nil {
		replaced := t.TokenHash
		delete(s.byHash, replaced)
		s.record(replaced, t.ID, row.CreatedAt, tokens.ReasonRotated)
		t.SubjectEmail, t.TokenHash, t.Prefix = row.Email, row.TokenHash, row.Prefix
		t.CreatedAt, t.ExpiresAt, t.LastUsedAt = row.CreatedAt, row.ExpiresAt, nil
		s.byHash[t.TokenHash] = t
		return tokens.Minted{Token: *t, RotatedHash: replaced}, nil
	}
	t := &tokens.Token{
		ID: ids.New(), SubjectEmail: row.Email, SubjectIssuer: row.Issuer, AccountID: row.AccountID,
		ClientID: row.ClientID, DeviceLabel: row.DeviceLabel, Prefix: row.Prefix, TokenHash: row.TokenHash,
		CreatedAt: row.CreatedAt, ExpiresAt: row.ExpiresAt,
	}
	s.byID[t.ID] = t
	s.byHash[t.TokenHash] = t
	return tokens.Minted{Token: *t}, nil
}

// ownLiveForDevice is the subject's own live row for the device: an account's by account id, an external subject's by
// email and issuer (on rows without an account).
func (s *Store) ownLiveForDevice(row rules.MintRow) *tokens.Token {
	for _, t := range s.byID {
		if t.RevokedAt != nil || t.ClientID != row.ClientID || t.DeviceLabel != row.DeviceLabel || t.SubjectIssuer != row.Issuer {
			continue
		}
		if row.AccountID != "" && t.AccountID == row.AccountID ||
			row.AccountID == "" && t.AccountID == "" && t.SubjectEmail == row.Email {
			return t
		}
	}
	return nil
}

// slotHolder is the live row uq_oauth_active_per_device would collide with: same stored email, issuer, client and label.
func (s *Store) slotHolder(row rules.MintRow) *tokens.Token {
	for _, t := range s.byID {
		if t.RevokedAt == nil && t.SubjectEmail == row.Email && t.SubjectIssuer == row.Issuer &&
			t.ClientID == row.ClientID && t.DeviceLabel == row.DeviceLabel {
			return t
		}
	}
	return nil
}

// LookupByHash implements tokens.Store.
func (s *Store) LookupByHash(ctx context.Context, hash string) (tokens.Token, error) {
	if err := ctx.Err(); err != nil {
		return tokens.Token{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.byHash[hash]
	if !ok {
		return tokens.Token{}, tokens.ErrNotFound
	}
	return *t, nil
}

// LookupByHashWithAccount is the Postgres store's: LookupByHash, the row's account (the zero Account when it has none or
// the account does not exist) and whether that account is an active member of tenantID, read under one lock.
func (s *Store) LookupByHashWithAccount(ctx context.Context, hash, tenantID string) (tokens.Token, directory.Account, bool, error) {
	if err := ctx.Err(); err != nil {
		return tokens.Token{}, directory.Account{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.byHash[hash]
	if !ok {
		return tokens.Token{}, directory.Account{}, false, tokens.ErrNotFound
	}
	accountID, ok := ids.Canonical(t.AccountID)
	if !ok {
		return *t, directory.Account{}, false, nil
	}
	a, found := s.account(accountID)
	if !found {
		return *t, directory.Account{}, false, nil
	}
	tenantID, tenantOK := ids.Canonical(tenantID)
	member := tenantOK && a.Status == directory.AccountStatusActive && slices.ContainsFunc(s.dir.Joins,
		func(j dirfixture.Join) bool { return j.TenantID == tenantID && j.AccountID == accountID })
	return *t, a, member, nil
}

// HardExpire implements tokens.Store, with the same expiry condition as the Postgres compare-and-set.
func (s *Store) HardExpire(ctx context.Context, id string, now time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	id, ok := ids.Canonical(id)
	if !ok {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.byID[id]
	if !ok || t.RevokedAt != nil || now.Before(t.ExpiresAt) {
		return false, nil
	}
	s.revoke(t, now, tokens.ReasonExpired)
	return true, nil
}

// Revoke implements tokens.Store.
func (s *Store) Revoke(ctx context.Context, subject tokens.Subject, id string, now time.Time) (tokens.Token, error) {
	if err := ctx.Err(); err != nil {
		return tokens.Token{}, err
	}
	id, idOK := ids.Canonical(id)
	owner, ownerOK := rules.OwnerOf(subject)
	if !idOK || !ownerOK {
		return tokens.Token{}, tokens.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.byID[id]
	if !ok || !owner.Owns(*t) {
		return tokens.Token{}, tokens.ErrNotFound
	}
	if t.RevokedAt != nil {
		return tokens.Token{}, tokens.ErrAlreadyRevoked
	}
	before := *t
	s.revoke(t, now, tokens.ReasonRevoked)
	return before, nil
}

func (s *Store) revoke(t *tokens.Token, now time.Time, reason tokens.RevocationReason) {
	delete(s.byHash, t.TokenHash)
	at := now.Truncate(rules.Precision)
	s.record(t.TokenHash, t.ID, at, reason)
	t.RevokedAt, t.TokenHash = &at, ""
}

// record keeps a hash taken out of service; the first record of a hash wins, as with ON CONFLICT DO NOTHING.
func (s *Store) record(hash, id string, at time.Time, reason tokens.RevocationReason) {
	if _, ok := s.revoked[hash]; ok || hash == "" {
		return
	}
	s.revoked[hash] = tokens.RevokedHash{Hash: hash, TokenID: id, RevokedAt: at.Truncate(rules.Precision), Reason: reason}
}

// RevokedSince implements tokens.Store.
func (s *Store) RevokedSince(ctx context.Context, since time.Time) ([]tokens.RevokedHash, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	out := []tokens.RevokedHash{}
	for _, r := range s.revoked {
		if !r.RevokedAt.Before(since) {
			out = append(out, r)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b tokens.RevokedHash) int {
		return cmp.Or(a.RevokedAt.Compare(b.RevokedAt), cmp.Compare(a.Hash, b.Hash))
	})
	return out, nil
}

// LookupRevoked implements tokens.Store.
func (s *Store) LookupRevoked(ctx context.Context, hash string) (tokens.RevokedHash, error) {
	if err := ctx.Err(); err != nil {
		return tokens.RevokedHash{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.revoked[hash]
	if !ok {
		return tokens.RevokedHash{}, tokens.ErrNotFound
	}
	return r, nil
}

// RecordLastUsed implements tokens.Store with the Postgres statement's row conditions; nothing holds a row here, so no use
// is skipped for a lock.
func (s *Store) RecordLastUsed(ctx context.Context, uses []tokens.Use) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	batch := rules.LastUses(uses)
	s.mu.Lock()
	defer s.mu.Unlock()
	written := 0
	for _, u := range batch {
		t, ok := s.byID[u.TokenID]
		if !ok || t.RevokedAt != nil || t.CreatedAt.After(u.At) || t.LastUsedAt != nil && !t.LastUsedAt.Before(u.At) {
			continue
		}
		at := u.At
		t.LastUsedAt = &at
		written++
	}
	return written, nil
}

// ListLive implements tokens.Store.
func (s *Store) ListLive(ctx context.Context, subject tokens.Subject, now time.Time, p tokens.Page) ([]tokens.Token, int, error) {
	offset, limit, err := rules.Window(p)
	if err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	owner, ok := rules.OwnerOf(subject)
	if !ok {
		return []tokens.Token{}, 0, nil
	}
	s.mu.Lock()
	var live []tokens.Token
	for _, t := range s.byID {
		if t.RevokedAt == nil && t.ExpiresAt.After(now) && owner.Owns(*t) {
			live = append(live, *t)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(live, func(a, b tokens.Token) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(b.ID, a.ID))
	})
	page := []tokens.Token{}
	if offset < len(live) {
		page = append(page, live[offset:min(offset+limit, len(live))]...)
	}
	return page, len(live), nil
}

// Prune implements tokens.Store, in batches like Postgres so a long prune does not hold the store lock throughout.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, batchSize int) (int, error) {
	if batchSize < 1 {
		return 0, rules.ErrInvalidBatch
	}
	if !s.pruning.TryLock() {
		return 0, tokens.ErrPruneBusy
	}
	defer s.pruning.Unlock()
	deleted := 0
	for {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		n := s.pruneBatch(cutoff, batchSize)
		deleted += n
		if n < batchSize {
			s.pruneRevoked(cutoff)
			return deleted, nil
		}
	}
}

func (s *Store) pruneBatch(cutoff time.Time, batchSize int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, t := range s.byID {
		if n == batchSize {
			break
		}
		if t.RevokedAt != nil && t.RevokedAt.Before(cutoff) || t.RevokedAt == nil && t.ExpiresAt.Before(cutoff) {
			delete(s.byHash, t.TokenHash)
			delete(s.byID, id)
			n++
		}
	}
	return n
}

func (s *Store) pruneRevoked(cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, r := range s.revoked {
		if r.RevokedAt.Before(cutoff) {
			delete(s.revoked, h)
		}
	}
}
