package tokens

import (
	"slices"
	"testing"
)

func TestKindHas(t *testing.T) {
	for _, s := range KnownScopes {
		if !Account.Has(s) {
			t.Errorf("account tokens (full) lack %s", s)
		}
	}
	for _, s := range []Scope{ScopeAppsRun, ScopeAppsReadPermitted, ScopeAppsReadPermittedExternal} {
		if !ExternalSSO.Has(s) {
			t.Errorf("external tokens lack %s", s)
		}
	}
	for _, s := range []Scope{ScopeFull, ScopeAppsRead} {
		if ExternalSSO.Has(s) {
			t.Errorf("external tokens hold %s", s)
		}
	}
	if (Kind{}).Has(ScopeAppsRun) {
		t.Error("a kind without scopes holds apps:run")
	}
}

func TestKindLookups(t *testing.T) {
	for _, k := range Kinds {
		if got, ok := KindForPrefix(k.Prefix); !ok || got.Prefix != k.Prefix || !slices.Equal(got.Scopes, k.Scopes) {
			t.Errorf("KindForPrefix(%q) = %+v, %v", k.Prefix, got, ok)
		}
		if got, ok := KindForSubject(k.Subject); !ok || got.Prefix != k.Prefix {
			t.Errorf("KindForSubject(%q) = %+v, %v", k.Subject, got, ok)
		}
		if !k.Subject.Valid() {
			t.Errorf("subject type %q of %s is not valid", k.Subject, k.Prefix)
		}
	}
	for _, p := range []string{"dfoa", "app-", "dfp_", ""} {
		if _, ok := KindForPrefix(p); ok {
			t.Errorf("KindForPrefix(%q) found a kind", p)
		}
	}
	if _, ok := KindForSubject("robot"); ok || SubjectType("robot").Valid() {
		t.Error("an unknown subject type has a kind or is valid")
	}
	if Account.Prefix != "dfoa_" || Account.Subject != SubjectAccount || ExternalSSO.Prefix != "dfoe_" ||
		ExternalSSO.Subject != SubjectExternalSSO {
		t.Errorf("kinds do not match docs/reference/routes.md's scopes: %+v %+v", Account, ExternalSSO)
	}
}

func TestSubjects(t *testing.T) {
	a := AccountSubject("id-1", "  Alice@Example.COM ")
	if a != (Subject{Type: SubjectAccount, AccountID: "id-1", Email: "alice@example.com", Issuer: AccountIssuer}) {
		t.Errorf("AccountSubject = %+v", a)
	}
	e := ExternalSubject("Bob@Example.com", "https://idp")
	if e != (Subject{Type: SubjectExternalSSO, Email: "bob@example.com", Issuer: "https://idp"}) {
		t.Errorf("ExternalSubject = %+v", e)
	}
	if got := (Token{AccountID: "id-1", SubjectEmail: "alice@example.com", SubjectIssuer: AccountIssuer}).Subject(); got != a {
		t.Errorf("account row subject = %+v, want %+v", got, a)
	}
	if got := (Token{SubjectEmail: "bob@example.com", SubjectIssuer: "https://idp"}).Subject(); got != e {
		t.Errorf("external row subject = %+v, want %+v", got, e)
	}
}
