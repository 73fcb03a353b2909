package memory

import (
	"cmp"
	"context"
	"slices"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/tokens"
)

// Seed replaces the directory content. Ids are kept in Postgres's canonical (lower-case) form, as Postgres would return them.
func (s *Store) Seed(f dirfixture.Fixture) {
	canon := func(id string) string {
		if c, ok := ids.Canonical(id); ok {
			return c
		}
		return id
	}
	var c dirfixture.Fixture
	for _, t := range f.Tenants {
		t.ID = canon(t.ID)
		c.Tenants = append(c.Tenants, t)
	}
	for _, a := range f.Accounts {
		a.ID = canon(a.ID)
		c.Accounts = append(c.Accounts, a)
	}
	for _, a := range f.Apps {
		a.ID, a.TenantID = canon(a.ID), canon(a.TenantID)
		c.Apps = append(c.Apps, a)
	}
	for _, j := range f.Joins {
		j.TenantID, j.AccountID = canon(j.TenantID), canon(j.AccountID)
		c.Joins = append(c.Joins, j)
	}
	for _, x := range f.Integrates {
		x.AccountID = canon(x.AccountID)
		c.Integrates = append(c.Integrates, x)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dir = c
}

// AppWithTenant implements directory.Directory.
func (s *Store) AppWithTenant(ctx context.Context, appID string) (directory.App, directory.Tenant, bool, error) {
	if err := ctx.Err(); err != nil {
		return directory.App{}, directory.Tenant{}, false, err
	}
	id, ok := ids.Canonical(appID)
	if !ok {
		return directory.App{}, directory.Tenant{}, false, directory.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.dir.Apps, func(a directory.App) bool { return a.ID == id })
	if i < 0 {
		return directory.App{}, directory.Tenant{}, false, directory.ErrNotFound
	}
	app := s.dir.Apps[i]
	t, found := s.tenant(app.TenantID)
	return app, t, found, nil
}

// Tenant implements directory.Directory.
func (s *Store) Tenant(ctx context.Context, id string) (directory.Tenant, error) {
	if err := ctx.Err(); err != nil {
		return directory.Tenant{}, err
	}
	id, ok := ids.Canonical(id)
	if !ok {
		return directory.Tenant{}, directory.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, found := s.tenant(id)
	if !found {
		return directory.Tenant{}, directory.ErrNotFound
	}
	return t, nil
}

func (s *Store) tenant(id string) (directory.Tenant, bool) {
	i := slices.IndexFunc(s.dir.Tenants, func(t directory.Tenant) bool { return t.ID == id })
	if i < 0 {
		return directory.Tenant{}, false
	}
	return s.dir.Tenants[i], true
}

// Account implements directory.Directory.
func (s *Store) Account(ctx context.Context, id string) (directory.Account, error) {
	if err := ctx.Err(); err != nil {
		return directory.Account{}, err
	}
	id, ok := ids.Canonical(id)
	if !ok {
		return directory.Account{}, directory.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, found := s.account(id)
	if !found {
		return directory.Account{}, directory.ErrNotFound
	}
	return a, nil
}

func (s *Store) account(id string) (directory.Account, bool) {
	i := slices.IndexFunc(s.dir.Accounts, func(a directory.Account) bool { return a.ID == id })
	if i < 0 {
		return directory.Account{}, false
	}
	return s.dir.Accounts[i], true
}

// AccountByEmail implements directory.Directory: an exact match wins over a case-insensitive one, then the lowest id.
func (s *Store) AccountByEmail(ctx context.Context, email string) (directory.Account, error) {
	if err := ctx.Err(); err != nil {
		return directory.Account{}, err
	}
	email = tokens.NormalizeEmail(email)
	if email == "" {
		return directory.Account{}, directory.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var matches []directory.Account
	for _, a := range s.dir.Accounts {
		if tokens.NormalizeEmail(a.Email) == email {
			matches = append(matches, a)
		}
	}
	if len(matches) == 0 {
		return directory.Account{}, directory.ErrNotFound
	}
	exact := func(a directory.Account) int {
		if a.Email == email {
			return 0
		}
		return 1
	}
	return slices.MinFunc(matches, func(a, b directory.Account) int {
		return cmp.Or(cmp.Compare(exact(a), exact(b)), cmp.Compare(a.ID, b.ID))
	}), nil
}

// AccountByOpenID implements directory.Directory: the linked account of (provider, open_id), matched exactly.
func (s *Store) AccountByOpenID(ctx context.Context, provider, openID string) (directory.Account, error) {
	if err := ctx.Err(); err != nil {
		return directory.Account{}, err
	}
	if provider == "" || openID == "" {
		return directory.Account{}, directory.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.dir.Integrates {
		if x.Provider == provider && x.OpenID == openID {
			if a, found := s.account(x.AccountID); found {
				return a, nil
			}
		}
	}
	return directory.Account{}, directory.ErrNotFound
}

// IsActiveMember implements directory.Directory.
func (s *Store) IsActiveMember(ctx context.Context, tenantID, accountID string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	tenantID, tenantOK := ids.Canonical(tenantID)
	accountID, accountOK := ids.Canonical(accountID)
	if !tenantOK || !accountOK {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, found := s.account(accountID)
	if !found || a.Status != directory.AccountStatusActive {
		return false, nil
	}
	return slices.ContainsFunc(s.dir.Joins, func(j dirfixture.Join) bool {
		return j.TenantID == tenantID && j.AccountID == accountID
	}), nil
}

// Workspaces implements directory.Directory: normal tenants only, by name (bytewise), then id.
func (s *Store) Workspaces(ctx context.Context, accountID string) ([]directory.Workspace, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	list := []directory.Workspace{}
	accountID, ok := ids.Canonical(accountID)
	if !ok {
		return list, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.dir.Joins {
		if j.AccountID != accountID {
			continue
		}
		if t, found := s.tenant(j.TenantID); found && t.Status == directory.TenantStatusNormal {
			list = append(list, directory.Workspace{ID: t.ID, Name: t.Name, Role: j.Role, Current: j.Current})
		}
	}
	slices.SortFunc(list, func(a, b directory.Workspace) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return list, nil
}
