package main

import (
	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
)

// The demo directory: fixed, readable ids so the walkthrough and tests can name them.
const (
	demoTenantID      = "10000000-0000-4000-8000-000000000001"
	demoAccountID     = "20000000-0000-4000-8000-000000000002"
	demoAppID         = "30000000-0000-4000-8000-000000000003" // a chat app
	demoWorkflowAppID = "30000000-0000-4000-8000-000000000004"
	demoEmail         = "demo@example.com"

	// Another team's workspace and app: the demo account is no member, so extauthz refuses both.
	otherTenantID  = "10000000-0000-4000-8000-000000000005"
	otherAccountID = "20000000-0000-4000-8000-000000000006"
	otherAppID     = "30000000-0000-4000-8000-000000000007"
)

func demoFixture() dirfixture.Fixture {
	return dirfixture.Fixture{
		Tenants: []directory.Tenant{
			{ID: demoTenantID, Name: "Demo workspace", Status: directory.TenantStatusNormal},
			{ID: otherTenantID, Name: "Another team's workspace", Status: directory.TenantStatusNormal},
		},
		Accounts: []directory.Account{
			{ID: demoAccountID, Email: demoEmail, Name: "Demo User", Status: directory.AccountStatusActive},
			{ID: otherAccountID, Email: "other@example.com", Name: "Other User", Status: directory.AccountStatusActive},
		},
		Apps: []directory.App{
			{ID: demoAppID, TenantID: demoTenantID, Name: "Demo chat", Mode: appModeChat,
				Status: directory.AppStatusNormal, EnableAPI: true},
			{ID: demoWorkflowAppID, TenantID: demoTenantID, Name: "Demo workflow", Mode: appModeWorkflow,
				Status: directory.AppStatusNormal, EnableAPI: true},
			{ID: otherAppID, TenantID: otherTenantID, Name: "Their chat", Mode: appModeChat,
				Status: directory.AppStatusNormal, EnableAPI: true},
		},
		Joins: []dirfixture.Join{
			{TenantID: demoTenantID, AccountID: demoAccountID, Role: "owner", Current: true},
			{TenantID: otherTenantID, AccountID: otherAccountID, Role: "owner", Current: true},
		},
	}
}

// demoApps is what Dify keeps about the fixture's apps beyond the columns the directory reads (description, tags,
// author): the demo API lists these apps and shows these details.
func demoApps() []demoApp {
	return []demoApp{
		{ID: demoAppID, Description: "Answers with your message, streamed as a chat app's events.",
			Tags: []string{"demo"}, CreatedBy: demoAccountID},
		{ID: demoWorkflowAppID, Description: "Returns its text input as its output, streamed as a workflow's events.",
			Tags: []string{"demo"}, CreatedBy: demoAccountID},
		{ID: otherAppID, Description: "Belongs to a workspace the demo account is not a member of.",
			CreatedBy: otherAccountID},
	}
}
