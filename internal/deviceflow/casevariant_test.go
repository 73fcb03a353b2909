package deviceflow

import (
	"net/http"
	"testing"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/store/dirfixture"
	"github.com/authgate/authgate/internal/testenv"
)

// TestCaseVariantAccountsDoNotTakeEachOthersTokens: Dify matches account emails exactly, so Ann@Example.com and
// ann@example.com can be two accounts. A login of the second on a device label the first holds gets access_denied and the
// first keeps its token; another label works.
func TestCaseVariantAccountsDoNotTakeEachOthersTokens(t *testing.T) {
	e := newFlowEnv(t, nil)
	twin := directory.Account{ID: "0a000000-0000-4000-8000-0000000000a2", Email: "ann@example.com", Name: "Ann's twin",
		Status: directory.AccountStatusActive}
	seedAccounts(t, e, twin)
	ann := e.login(flowAnn, "laptop")

	dc, uc := e.issue("laptop")
	if r := e.approve(uc, e.consoleFor(twin.ID)); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	wantErr(t, e.pollJSON(dc), http.StatusBadRequest, codeAccessDenied)
	if r := e.get("/me", withBearer(ann.str("token"))); r.Status != http.StatusOK || r.Body["token_id"] != ann.str("token_id") {
		t.Fatalf("the first account's token after the twin's login: %d %s", r.Status, r.Raw)
	}
	if n := e.logs.count(auditTokenRotated); n != 0 {
		t.Fatalf("%d rotations audited, want none", n)
	}

	desk := e.login(twin, "desktop")
	me := e.get("/me", withBearer(desk.str("token")))
	acct, _ := me.Body["account"].(map[string]any)
	if me.Status != http.StatusOK || acct["id"] != twin.ID {
		t.Fatalf("the twin's own device: %d %s", me.Status, me.Raw)
	}
	if r := e.get("/account/sessions", withBearer(desk.str("token"))); r.Body["total"] != float64(1) {
		t.Fatalf("the twin's sessions: %s", r.Raw)
	}
}

func seedAccounts(t *testing.T, e *flowEnv, accts ...directory.Account) {
	t.Helper()
	testenv.SeedDirectory(t, e.pool, dirfixture.Fixture{Accounts: accts})
}
