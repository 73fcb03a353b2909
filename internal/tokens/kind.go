// Package tokens is the domain of authgate's bearer tokens: their kinds, scopes, format, hashing, lifetime policy and the
// storage contract. It knows nothing about Envoy, HTTP or SQL.
package tokens

// SubjectType says who a token speaks for.
type SubjectType string

const (
	// SubjectAccount is a Dify account (account branch, dfoa_ tokens).
	SubjectAccount SubjectType = "account"
	// SubjectExternalSSO is a subject authenticated by the enterprise SSO (dfoe_ tokens); it has no Dify account.
	SubjectExternalSSO SubjectType = "external_sso"
)

// Valid reports whether t is one of the known subject types.
func (t SubjectType) Valid() bool { return t == SubjectAccount || t == SubjectExternalSSO }

// Scope is a permission a token carries. Scopes are stamped from the token's prefix and never stored.
type Scope string

const (
	ScopeFull                      Scope = "full"
	ScopeAppsRun                   Scope = "apps:run"
	ScopeAppsRead                  Scope = "apps:read"
	ScopeAppsReadPermitted         Scope = "apps:read:permitted"
	ScopeAppsReadPermittedExternal Scope = "apps:read:permitted-external"
)

// KnownScopes lists every scope a route policy may name.
var KnownScopes = []Scope{ScopeFull, ScopeAppsRun, ScopeAppsRead, ScopeAppsReadPermitted, ScopeAppsReadPermittedExternal}

// Kind is a token family, keyed by its prefix.
type Kind struct {
	// Prefix includes the underscore, as stored in oauth_access_tokens.prefix (e.g. "dfoa_").
	Prefix  string
	Subject SubjectType
	Scopes  []Scope
}

var (
	// Account tokens belong to a Dify account and hold every scope.
	Account = Kind{Prefix: "dfoa_", Subject: SubjectAccount, Scopes: []Scope{ScopeFull}}
	// ExternalSSO tokens belong to an enterprise SSO subject and may only run and list permitted apps.
	ExternalSSO = Kind{Prefix: "dfoe_", Subject: SubjectExternalSSO,
		Scopes: []Scope{ScopeAppsRun, ScopeAppsReadPermitted, ScopeAppsReadPermittedExternal}}
)

// Kinds are all token kinds authgate issues and accepts.
var Kinds = []Kind{Account, ExternalSSO}

// KindForSubject returns the kind minted for a subject type.
func KindForSubject(t SubjectType) (Kind, bool) {
	for _, k := range Kinds {
		if k.Subject == t {
			return k, true
		}
	}
	return Kind{}, false
}

// KindForPrefix returns the kind with the given stored prefix (e.g. "dfoa_").
func KindForPrefix(prefix string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Prefix == prefix {
			return k, true
		}
	}
	return Kind{}, false
}

// Has reports whether the kind's scopes satisfy want; full satisfies every scope.
func (k Kind) Has(want Scope) bool {
	for _, s := range k.Scopes {
		if s == want || s == ScopeFull {
			return true
		}
	}
	return false
}
