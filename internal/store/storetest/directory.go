package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
)

// Directory fixture ids. Tenant "Beta" sorts before "alpha" bytewise (upper case first), which pins the documented order.
const (
	tenantAlpha    = "a0000000-0000-4000-8000-000000000001"
	tenantBeta     = "a0000000-0000-4000-8000-000000000002"
	tenantArchived = "a0000000-0000-4000-8000-000000000003"
	tenantTwinA    = "a0000000-0000-4000-8000-000000000005" // same name as tenantTwinB: ordered by id
	tenantTwinB    = "a0000000-0000-4000-8000-000000000004"
	tenantMissing  = "a0000000-0000-4000-8000-0000000000ff"

	accountActive = "b0000000-0000-4000-8000-000000000001"
	accountBanned = "b0000000-0000-4000-8000-000000000002"
	accountLonely = "b0000000-0000-4000-8000-000000000003"
	accountGone   = "b0000000-0000-4000-8000-0000000000fe" // linked in account_integrates, but no such account

	appNormal   = "c0000000-0000-4000-8000-000000000001"
	appOrphan   = "c0000000-0000-4000-8000-000000000002" // its tenant does not exist
	appArchived = "c0000000-0000-4000-8000-000000000003"
)

// DirectoryFixture is the content RunDirectory seeds.
func DirectoryFixture() dirfixture.Fixture {
	return dirfixture.Fixture{
		Tenants: []directory.Tenant{
			{ID: tenantAlpha, Name: "alpha", Status: directory.TenantStatusNormal},
			{ID: tenantBeta, Name: "Beta", Status: directory.TenantStatusNormal},
			{ID: tenantArchived, Name: "archived", Status: directory.TenantStatusArchive},
			{ID: tenantTwinA, Name: "twin", Status: directory.TenantStatusNormal},
			{ID: tenantTwinB, Name: "twin", Status: directory.TenantStatusNormal},
		},
		Accounts: []directory.Account{
			{ID: accountActive, Email: "Dana@Example.com", Name: "Dana", Status: directory.AccountStatusActive},
			{ID: accountBanned, Email: "eve@example.com", Name: "Eve", Status: directory.AccountStatusBanned},
			{ID: accountLonely, Email: "finn@example.com", Name: "Finn", Status: directory.AccountStatusActive},
		},
		Apps: []directory.App{
			{ID: appNormal, TenantID: tenantAlpha, Name: "Support bot", Mode: "chat", Status: directory.AppStatusNormal,
				EnableAPI: true},
			{ID: appOrphan, TenantID: tenantMissing, Name: "Orphan", Mode: "workflow", Status: directory.AppStatusNormal},
			{ID: appArchived, TenantID: tenantArchived, Name: "Old", Mode: "completion", Status: directory.AppStatusNormal,
				EnableAPI: true},
		},
		Joins: []dirfixture.Join{
			{TenantID: tenantAlpha, AccountID: accountActive, Role: "owner", Current: true},
			{TenantID: tenantBeta, AccountID: accountActive, Role: "normal"},
			{TenantID: tenantArchived, AccountID: accountActive, Role: "admin"},
			{TenantID: tenantTwinA, AccountID: accountActive, Role: "editor"},
			{TenantID: tenantTwinB, AccountID: accountActive, Role: "normal"},
			{TenantID: tenantAlpha, AccountID: accountBanned, Role: "normal", Current: true},
		},
		Integrates: []dirfixture.Integrate{
			{AccountID: accountActive, Provider: directory.ProviderGitHub, OpenID: "1001"},
			{AccountID: accountBanned, Provider: directory.ProviderGitHub, OpenID: "1002"},
			{AccountID: accountLonely, Provider: "google", OpenID: "1001"}, // the same id at another provider
			{AccountID: upperID(accountLonely), Provider: directory.ProviderGitHub, OpenID: "1004"},
			{AccountID: accountGone, Provider: directory.ProviderGitHub, OpenID: "1003"},
		},
	}
}

// RunDirectory runs the directory conformance suite. newDirectory must return a directory holding exactly f.
func RunDirectory(t *testing.T, newDirectory func(t *testing.T, f dirfixture.Fixture) directory.Directory) {
	d := newDirectory(t, DirectoryFixture())
	ctx := context.Background()

	t.Run("AppWithTenant", func(t *testing.T) {
		app, tenant, found, err := d.AppWithTenant(ctx, appNormal)
		wantApp := directory.App{ID: appNormal, TenantID: tenantAlpha, Name: "Support bot", Mode: "chat",
			Status: directory.AppStatusNormal, EnableAPI: true}
		wantTenant := directory.Tenant{ID: tenantAlpha, Name: "alpha", Status: directory.TenantStatusNormal}
		if err != nil || !found || app != wantApp || tenant != wantTenant {
			t.Fatalf("AppWithTenant = %+v, %+v, %v, %v; want %+v, %+v", app, tenant, found, err, wantApp, wantTenant)
		}
		app, tenant, found, err = d.AppWithTenant(ctx, appOrphan)
		if err != nil || found || app.ID != appOrphan || app.EnableAPI || tenant != (directory.Tenant{}) {
			t.Fatalf("app without tenant = %+v, %+v, %v, %v; want the app, tenantFound false", app, tenant, found, err)
		}
		_, tenant, found, err = d.AppWithTenant(ctx, appArchived)
		if err != nil || !found || tenant.Status != directory.TenantStatusArchive {
			t.Fatalf("app of an archived tenant: tenant %+v, found %v, err %v", tenant, found, err)
		}
		if app, _, _, err := d.AppWithTenant(ctx, upperID(appNormal)); err != nil || app.ID != appNormal {
			t.Fatalf("upper-case app id = %+v, %v; want the app with its canonical id", app, err)
		}
		for _, id := range []string{tenantAlpha, "not-a-uuid", "", appNormal + "x", "' OR 1=1 --"} {
			if _, _, _, err := d.AppWithTenant(ctx, id); !errors.Is(err, directory.ErrNotFound) {
				t.Errorf("AppWithTenant(%q): err = %v, want ErrNotFound", id, err)
			}
		}
	})

	t.Run("Tenant", func(t *testing.T) {
		if got, err := d.Tenant(ctx, tenantBeta); err != nil ||
			got != (directory.Tenant{ID: tenantBeta, Name: "Beta", Status: directory.TenantStatusNormal}) {
			t.Fatalf("Tenant = %+v, %v", got, err)
		}
		for _, id := range []string{tenantMissing, "nope", ""} {
			if _, err := d.Tenant(ctx, id); !errors.Is(err, directory.ErrNotFound) {
				t.Errorf("Tenant(%q): err = %v, want ErrNotFound", id, err)
			}
		}
	})

	t.Run("Account", func(t *testing.T) {
		want := directory.Account{ID: accountBanned, Email: "eve@example.com", Name: "Eve", Status: directory.AccountStatusBanned}
		if got, err := d.Account(ctx, accountBanned); err != nil || got != want {
			t.Fatalf("Account = %+v, %v; want %+v", got, err, want)
		}
		for _, id := range []string{appNormal, "nope", ""} {
			if _, err := d.Account(ctx, id); !errors.Is(err, directory.ErrNotFound) {
				t.Errorf("Account(%q): err = %v, want ErrNotFound", id, err)
			}
		}
	})

	t.Run("AccountByEmail", func(t *testing.T) {
		for _, email := range []string{"dana@example.com", "DANA@EXAMPLE.COM", "Dana@Example.com", " dana@example.com "} {
			if got, err := d.AccountByEmail(ctx, email); err != nil || got.ID != accountActive || got.Email != "Dana@Example.com" {
				t.Errorf("AccountByEmail(%q) = %+v, %v; want Dana as stored", email, got, err)
			}
		}
		for _, email := range []string{"nobody@example.com", "", "dana@example", "%@example.com"} {
			if got, err := d.AccountByEmail(ctx, email); !errors.Is(err, directory.ErrNotFound) {
				t.Errorf("AccountByEmail(%q) = %+v, %v; want ErrNotFound", email, got, err)
			}
		}
	})

	t.Run("AccountByOpenID", func(t *testing.T) {
		cases := []struct {
			provider, openID, want string // want "" = ErrNotFound
		}{
			{directory.ProviderGitHub, "1001", accountActive},
			{directory.ProviderGitHub, "1002", accountBanned}, // the account whatever its status: the caller decides
			{"google", "1001", accountLonely},
			{directory.ProviderGitHub, "1004", accountLonely}, // the link's account id in upper case
			{directory.ProviderGitHub, "1003", ""},            // a link to an account that does not exist
			{directory.ProviderGitHub, "9999", ""},
			{"GitHub", "1001", ""}, // providers match exactly, as Dify stores them
			{directory.ProviderGitHub, " 1001", ""},
			{directory.ProviderGitHub, "1001 ", ""},
			{directory.ProviderGitHub, "", ""},
			{"", "1001", ""},
			{directory.ProviderGitHub, "' OR 1=1 --", ""},
		}
		for _, c := range cases {
			got, err := d.AccountByOpenID(ctx, c.provider, c.openID)
			if c.want == "" {
				if !errors.Is(err, directory.ErrNotFound) {
					t.Errorf("AccountByOpenID(%q, %q) = %+v, %v; want ErrNotFound", c.provider, c.openID, got, err)
				}
				continue
			}
			if err != nil || got.ID != c.want {
				t.Errorf("AccountByOpenID(%q, %q) = %+v, %v; want account %s", c.provider, c.openID, got, err, c.want)
			}
		}
		want := directory.Account{ID: accountBanned, Email: "eve@example.com", Name: "Eve", Status: directory.AccountStatusBanned}
		if got, err := d.AccountByOpenID(ctx, directory.ProviderGitHub, "1002"); err != nil || got != want {
			t.Fatalf("AccountByOpenID = %+v, %v; want the whole row %+v", got, err, want)
		}
	})

	t.Run("IsActiveMember", func(t *testing.T) {
		cases := []struct {
			name            string
			tenant, account string
			want            bool
		}{
			{"active member", tenantAlpha, accountActive, true},
			{"active member, upper-case ids", upperID(tenantAlpha), upperID(accountActive), true},
			{"banned member", tenantAlpha, accountBanned, false},
			{"active non-member", tenantAlpha, accountLonely, false},
			{"unknown tenant", tenantMissing, accountActive, false},
			{"unknown account", tenantAlpha, "b0000000-0000-4000-8000-0000000000ff", false},
			{"tenant not a UUID", "alpha", accountActive, false},
			{"account not a UUID", tenantAlpha, "dana", false},
		}
		for _, c := range cases {
			if got, err := d.IsActiveMember(ctx, c.tenant, c.account); err != nil || got != c.want {
				t.Errorf("%s: IsActiveMember = %v, %v; want %v", c.name, got, err, c.want)
			}
		}
	})

	t.Run("Workspaces", func(t *testing.T) {
		want := []directory.Workspace{ // archived tenants left out; bytewise names, then ids
			{ID: tenantBeta, Name: "Beta", Role: "normal"},
			{ID: tenantAlpha, Name: "alpha", Role: "owner", Current: true},
			{ID: tenantTwinB, Name: "twin", Role: "normal"},
			{ID: tenantTwinA, Name: "twin", Role: "editor"},
		}
		if got, err := d.Workspaces(ctx, accountActive); err != nil || !slices.Equal(got, want) {
			t.Fatalf("Workspaces = %+v, %v\nwant %+v", got, err, want)
		}
		for _, id := range []string{accountLonely, "b0000000-0000-4000-8000-0000000000ff", "dana", ""} {
			if got, err := d.Workspaces(ctx, id); err != nil || got == nil || len(got) != 0 {
				t.Errorf("Workspaces(%q) = %#v, %v; want an empty, non-nil list", id, got, err)
			}
		}
	})

	t.Run("HonoursContext", func(t *testing.T) {
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		checks := map[string]error{}
		_, _, _, checks["AppWithTenant"] = d.AppWithTenant(cancelled, appNormal)
		_, checks["Tenant"] = d.Tenant(cancelled, tenantAlpha)
		_, checks["Account"] = d.Account(cancelled, accountActive)
		_, checks["AccountByEmail"] = d.AccountByEmail(cancelled, "dana@example.com")
		_, checks["AccountByOpenID"] = d.AccountByOpenID(cancelled, directory.ProviderGitHub, "1001")
		_, checks["IsActiveMember"] = d.IsActiveMember(cancelled, tenantAlpha, accountActive)
		_, checks["Workspaces"] = d.Workspaces(cancelled, accountActive)
		for name, err := range checks {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: err = %v, want context.Canceled", name, err)
			}
		}
	})
}

func upperID(id string) string { return upper(id) }
