package main

import "github.com/authgate/authgate/internal/directory"

// The demo directory: fixed, readable ids so the walkthrough and tests can name them.
const (
	demoTenantID  = "10000000-0000-4000-8000-000000000001"
	demoAccountID = "20000000-0000-4000-8000-000000000002"
	demoAppID     = "30000000-0000-4000-8000-000000000003"
	demoEmail     = "demo@example.com"
)

func demoFixture() directory.Fixture {
	return directory.Fixture{
		Tenants:  []directory.Tenant{{ID: demoTenantID, Name: "Demo workspace", Status: directory.TenantStatusNormal}},
		Accounts: []directory.Account{{ID: demoAccountID, Email: demoEmail, Name: "Demo User", Status: directory.AccountStatusActive}},
		Apps: []directory.App{{ID: demoAppID, TenantID: demoTenantID, Name: "Demo app", Mode: "workflow",
			Status: directory.AppStatusNormal, EnableAPI: true}},
		Joins: []directory.Join{{TenantID: demoTenantID, AccountID: demoAccountID, Role: "owner", Current: true}},
	}
}
