package main

import (
	"testing"
	"time"

	"github.com/authgate/authgate/internal/enterprise/enterprisetest"
	"github.com/authgate/authgate/internal/pipeline"
)

func eeVars(ent *enterprisetest.Server, extra ...string) map[string]string {
	vars := map[string]string{
		"ENTERPRISE_ENABLED":        "true",
		"ENTERPRISE_API_URL":        ent.URL(),
		"ENTERPRISE_API_SECRET_KEY": ent.SecretKey(),
	}
	for i := 0; i+1 < len(extra); i += 2 {
		vars[extra[i]] = extra[i+1]
	}
	return vars
}

// TestEnterpriseGates covers the edition, license and app_access rules of docs/reference/check.md (route, query, license and app access steps) on EE.
func TestEnterpriseGates(t *testing.T) {
	w := newWorld(t)
	ent := enterprisetest.NewServer(t)
	ent.SetLicenseStatus("active")
	srv := w.start(eeVars(ent))

	ada, adaID := w.accountToken(accountActive, "ada@example.com")
	ext, extID := w.externalToken("eve@partner.example")
	adaH := accountHeaders(accountActive, "ada@example.com", adaID)
	extH := externalHeaders("eve@partner.example", extID)
	const v1 = "/openapi/v1"

	t.Run("permitted routes exist on EE", func(t *testing.T) {
		expectAllow(t, srv.check(t, "GET", v1+"/apps/permitted?page=1", bearer(ext)), extH)
		expectAllow(t, srv.check(t, "GET", v1+"/permitted-external-apps", bearer(ext)), extH)
		expectDeny(t, srv.check(t, "GET", v1+"/apps/permitted", bearer(ada)), 403, pipeline.CodeWrongSurface, nil)
	})
	t.Run("reject_query", func(t *testing.T) {
		for _, q := range []string{"?workspace_id=" + tenantMain, "?tag=x", "?t%61g=x", "?page=1&tag=a"} {
			expectDeny(t, srv.check(t, "GET", v1+"/apps/permitted"+q, bearer(ext)), 400, pipeline.CodeInvalidQuery, nil)
		}
	})

	run := v1 + "/apps/" + appOK + "/run"
	withApp := func(h map[string]string) map[string]string {
		return with(h, pipeline.HeaderAppID, appOK, pipeline.HeaderTenantID, tenantMain)
	}
	t.Run("public app", func(t *testing.T) {
		ent.SetAccessMode(appOK, "public")
		expectAllow(t, srv.check(t, "POST", run, bearer(ada)), withApp(adaH))
		expectAllow(t, srv.check(t, "POST", run, bearer(ext)), withApp(extH))
	})
	// Verdicts are cached per subject and app (allow 60 s, deny 10 s), so each mode below uses its own app.
	for _, c := range []struct {
		mode            string
		allowUser       bool
		account, extern bool
	}{
		{"sso_verified", false, true, true},
		{"private_all", false, true, false},
		{"private", true, true, false},
		{"private", false, false, false},
		{"some_future_mode", false, false, false},
	} {
		t.Run("mode "+c.mode, func(t *testing.T) {
			w2 := newWorld(t)
			ent2 := enterprisetest.NewServer(t)
			ent2.SetAccessMode(appOK, c.mode)
			if c.allowUser {
				ent2.AllowUser(accountActive, appOK)
			}
			s := w2.start(eeVars(ent2))
			a, aID := w2.accountToken(accountActive, "ada@example.com")
			e, eID := w2.externalToken("eve@partner.example")
			if c.account {
				expectAllow(t, s.check(t, "POST", run, bearer(a)), withApp(accountHeaders(accountActive, "ada@example.com", aID)))
			} else {
				expectDeny(t, s.check(t, "POST", run, bearer(a)), 403, pipeline.CodeSubjectNoAppAccess, nil)
			}
			if c.extern {
				expectAllow(t, s.check(t, "POST", run, bearer(e)), withApp(externalHeaders("eve@partner.example", eID)))
			} else {
				expectDeny(t, s.check(t, "POST", run, bearer(e)), 403, pipeline.CodeSubjectNoAppAccess, nil)
			}
		})
	}

	t.Run("license allow-list", func(t *testing.T) {
		for status, allowed := range map[string]bool{"active": true, "expiring": true, "ACTIVE": true, "expired": false,
			"inactive": false, "lost": false, "none": false, "": false, "future_status": false} {
			e := enterprisetest.NewServer(t)
			e.SetLicenseStatus(status)
			s := w.start(eeVars(e))
			resp := s.check(t, "GET", v1+"/apps/permitted", bearer(ext))
			if allowed {
				expectAllow(t, resp, extH)
			} else {
				expectDeny(t, resp, 403, pipeline.CodeLicenseRequired, nil)
			}
		}
	})
}

// TestEnterpriseFailuresAreUnavailable: a slow or failing enterprise service is a 503 within the Check deadline, never an allow.
func TestEnterpriseFailuresAreUnavailable(t *testing.T) {
	w := newWorld(t)
	ent := enterprisetest.NewServer(t)
	ent.SetAccessMode(appOK, "public")
	ext, _ := w.externalToken("eve@partner.example")
	ada, _ := w.accountToken(accountActive, "ada@example.com")

	slow := w.start(eeVars(ent, "CHECK_TIMEOUT", "300ms"))
	ent.SetDelay(5 * time.Second)
	start := time.Now()
	expectDeny(t, slow.check(t, "GET", "/openapi/v1/apps/permitted", bearer(ext)), 503, pipeline.CodeAuthUnavailable, nil)
	expectDeny(t, slow.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ada)), 503, pipeline.CodeAuthUnavailable, nil)
	// Both answers came from the deadline, not from the 5 s service.
	if elapsed := time.Since(start); elapsed >= 5*time.Second {
		t.Errorf("deadline not applied: %v", elapsed)
	}

	ent.SetDelay(0)
	ent.FailWith(500)
	failing := w.start(eeVars(ent))
	expectDeny(t, failing.check(t, "GET", "/openapi/v1/apps/permitted", bearer(ext)), 503, pipeline.CodeAuthUnavailable, nil)
	expectDeny(t, failing.check(t, "POST", "/openapi/v1/apps/"+appOK+"/run", bearer(ext)), 503, pipeline.CodeAuthUnavailable, nil)
}
