package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/tokens"
)

// aclVerdict is a web-app access answer; a refusal is kept for a shorter time than an allow (until).
type aclVerdict struct {
	allowed bool
	until   time.Time
}

// appRecord is a directory read kept in memory for AppCacheTTL.
type appRecord struct {
	app         directory.App
	tenant      directory.Tenant
	tenantFound bool
}

// Web-app access modes of Dify's enterprise service.
const (
	accessPublic      = "public"
	accessSSOVerified = "sso_verified"
	accessPrivateAll  = "private_all"
	accessPrivate     = "private"
)

// Dify caches web-app access verdicts: allow for 60 s, deny for 10 s.
const (
	aclAllowTTL = 60 * time.Second
	aclDenyTTL  = 10 * time.Second

	appEntries = 10_000  // apps with their tenants kept in memory
	aclEntries = 100_000 // web-app access verdicts kept in memory
)

// checkLicense is step 10: an allow-list, so a status the service invents later is a deny.
func (p *Pipeline) checkLicense(ctx context.Context) (Decision, bool) {
	licensed := deny(403, CodeLicenseRequired, "this route needs an active enterprise license")
	if p.deps.Enterprise == nil {
		return licensed, false
	}
	status, err := p.deps.Enterprise.LicenseStatus(ctx)
	if err != nil {
		p.dependencyFailed(ctx, "enterprise", "license status", err)
		return denyUnavailable(), false
	}
	if strings.EqualFold(status, "active") || strings.EqualFold(status, "expiring") {
		return Decision{}, true
	}
	return licensed, false
}

// checkApp is step 11.
func (p *Pipeline) checkApp(ctx context.Context, c *caller, appID string) (Decision, bool) {
	notFound := deny(404, CodeAppNotFound, "no such app")
	if !ids.Valid(appID) {
		return notFound, false
	}
	appID = strings.ToLower(appID)
	rec, ok := p.apps.Get(appID)
	if !ok {
		app, tenant, tenantFound, err := p.deps.Directory.AppWithTenant(ctx, appID)
		switch {
		case errors.Is(err, directory.ErrNotFound):
			return notFound, false
		case err != nil:
			p.dependencyFailed(ctx, "postgres", "app lookup", err)
			return denyUnavailable(), false
		}
		rec = appRecord{app: app, tenant: tenant, tenantFound: tenantFound}
		p.apps.Add(appID, rec)
	}
	switch {
	case rec.app.Status != directory.AppStatusNormal:
		return notFound, false
	case !rec.app.EnableAPI:
		return deny(403, CodeServiceAPIDisabled, "the service API of this app is disabled"), false
	case !rec.tenantFound || rec.tenant.Status == directory.TenantStatusArchive:
		return deny(403, CodeWorkspaceUnavailable, "the app's workspace is unavailable"), false
	}
	c.appID = rec.app.ID
	c.tenantID = rec.app.TenantID
	return Decision{}, true
}

// checkMembership is step 12, for accounts: the tenant is the app's, else {workspace_id}, else ?workspace_id.
func (p *Pipeline) checkMembership(ctx context.Context, c *caller, params map[string]string, workspaceQuery string) (Decision, bool) {
	tenant := c.tenantID
	if tenant == "" {
		var ok bool
		if tenant, ok = namedWorkspace(params, workspaceQuery); !ok {
			return deny(400, CodeInvalidQuery, "workspace_id must be a workspace id"), false
		}
	}
	member, known := c.entry.VerifiedTenants[tenant]
	if !known {
		var err error
		member, err = p.deps.Directory.IsActiveMember(ctx, tenant, c.entry.AccountID)
		if err != nil {
			p.dependencyFailed(ctx, "postgres", "membership lookup", err)
			return denyUnavailable(), false
		}
		if c.fill { // the entry is this Check's own, and is cached with its verdicts when the Check ends
			if c.entry.VerifiedTenants == nil {
				c.entry.VerifiedTenants = map[string]bool{}
			}
			c.entry.VerifiedTenants[tenant] = member
		} else if !c.redisDown {
			rctx, cancel := p.redisCtx(ctx)
			err = p.deps.Cache.RecordVerdict(rctx, c.hash, tenant, member)
			cancel()
			if err != nil {
				c.redisDown = true
				p.logFailure(ctx, slog.LevelDebug, "redis:membership verdict", "membership verdict not cached", "error", err)
			}
		}
	}
	if !member {
		return deny(403, CodeWorkspaceMembershipRevoked, "the account is not an active member of this workspace"), false
	}
	c.tenantID = tenant
	return Decision{}, true
}

// namedWorkspace is the tenant a request without an app names: {workspace_id}, else ?workspace_id, lower-cased; ok is
// false when that is not a workspace id.
func namedWorkspace(params map[string]string, workspaceQuery string) (string, bool) {
	tenant := params["workspace_id"]
	if tenant == "" {
		tenant = workspaceQuery
	}
	if !ids.Valid(tenant) {
		return "", false
	}
	return strings.ToLower(tenant), true
}

// membershipTenantHint is the tenant the membership step will ask about, when it is known before the token is looked up,
// so that the lookup reads the verdict in the same query: the app's tenant if the app is in memory, else the workspace
// the request names. "" when the step will not run for this Check, or the tenant is not known yet.
func (p *Pipeline) membershipTenantHint(c *caller) string {
	if c.route == nil || c.kind.Subject != tokens.SubjectAccount || !c.route.has(StepMembership) ||
		p.opts.MembershipEnforcedUpstream {
		return ""
	}
	if c.route.has(StepApp) {
		appID := c.params["app_id"]
		if !ids.Valid(appID) {
			return ""
		}
		rec, ok := p.apps.Peek(strings.ToLower(appID))
		if !ok {
			return ""
		}
		return rec.app.TenantID
	}
	tenant, _ := namedWorkspace(c.params, c.workspaceQuery)
	return tenant
}

// checkAppAccess is step 13.
func (p *Pipeline) checkAppAccess(ctx context.Context, c *caller) (Decision, bool) {
	noAccess := deny(403, CodeSubjectNoAppAccess, "this subject may not use this app")
	account := c.kind.Subject == tokens.SubjectAccount
	if !p.opts.EnterpriseEnabled || p.deps.Enterprise == nil {
		if account {
			return Decision{}, true
		}
		return noAccess, false
	}
	subject := c.entry.AccountID
	if !account {
		subject = c.entry.SubjectIssuer + "|" + c.entry.SubjectEmail
	}
	key := "acl:webapp:" + subject + ":" + c.appID
	verdict, cached := p.acl.Get(key)
	allowed := verdict.allowed
	if !cached || !p.deps.Now().Before(verdict.until) {
		mode, err := p.deps.Enterprise.WebAppAccessMode(ctx, c.appID)
		if err != nil {
			p.dependencyFailed(ctx, "enterprise", "web-app access mode", err)
			return denyUnavailable(), false
		}
		switch mode {
		case accessPublic, accessSSOVerified:
			allowed = true
		case accessPrivateAll:
			allowed = account
		case accessPrivate:
			if account {
				allowed, err = p.deps.Enterprise.IsUserAllowed(ctx, c.entry.AccountID, c.appID)
				if err != nil {
					p.dependencyFailed(ctx, "enterprise", "web-app user check", err)
					return denyUnavailable(), false
				}
			}
		}
		ttl := aclDenyTTL
		if allowed {
			ttl = aclAllowTTL
		}
		p.acl.Add(key, aclVerdict{allowed: allowed, until: p.deps.Now().Add(ttl)})
	}
	if !allowed {
		return noAccess, false
	}
	return Decision{}, true
}
