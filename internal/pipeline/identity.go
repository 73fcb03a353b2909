package pipeline

import (
	"slices"
	"strings"

	"github.com/authgate/authgate/internal/tokens"
)

// IdentityHeaderPrefix starts every header the pipeline hands to the upstream; clients can never supply one.
const IdentityHeaderPrefix = "x-authgate-"

const (
	HeaderSubjectType   = "x-authgate-subject-type"
	HeaderSubjectEmail  = "x-authgate-subject-email"
	HeaderSubjectIssuer = "x-authgate-subject-issuer"
	HeaderAccountID     = "x-authgate-account-id"
	HeaderTokenID       = "x-authgate-token-id"
	HeaderClientID      = "x-authgate-client-id"
	HeaderScopes        = "x-authgate-scopes"
	HeaderTenantID      = "x-authgate-tenant-id"
	HeaderAppID         = "x-authgate-app-id"
)

// IdentityHeaders are all headers an allow may set, in the order it sets them.
var IdentityHeaders = []string{HeaderSubjectType, HeaderSubjectEmail, HeaderSubjectIssuer, HeaderAccountID, HeaderTokenID,
	HeaderClientID, HeaderScopes, HeaderTenantID, HeaderAppID}

func isIdentityHeader(name string) bool { return slices.Contains(IdentityHeaders, name) }

// caller is the authenticated subject of a request, built up by the steps.
type caller struct {
	kind     tokens.Kind
	hash     string
	entry    TokenEntry
	tenantID string // set only once a step verified it
	appID    string
	// fill: entry was read from Postgres by this Check and is written to the token cache when the Check ends; until then
	// entry and its VerifiedTenants are this Check's own.
	fill bool
	// budgetAhead is the invalid-bearer budget's read, started beside the token cache read (readBudgetAhead), or nil.
	budgetAhead *budgetRead
	// route, params and workspaceQuery are the request's, for the membership step and its tenant.
	route          *Route
	params         map[string]string
	workspaceQuery string
	// redisDown is set when the Check starts with the Redis health breaker open, or once a Redis call of this Check failed:
	// the later calls are skipped rather than each waiting out its own timeout, so a Redis that hangs (a partition) leaves
	// Postgres the rest of the deadline, as a refusing one does.
	redisDown bool
}

func (c *caller) identityHeaders() []Header {
	h := make([]Header, 0, len(IdentityHeaders))
	h = append(h,
		Header{HeaderSubjectType, string(c.kind.Subject)},
		Header{HeaderSubjectEmail, c.entry.SubjectEmail},
		Header{HeaderSubjectIssuer, c.entry.SubjectIssuer},
	)
	if c.entry.AccountID != "" {
		h = append(h, Header{HeaderAccountID, c.entry.AccountID})
	}
	h = append(h,
		Header{HeaderTokenID, c.entry.TokenID},
		Header{HeaderClientID, c.entry.ClientID},
		Header{HeaderScopes, scopeHeader(c.kind)},
	)
	if c.tenantID != "" {
		h = append(h, Header{HeaderTenantID, c.tenantID})
	}
	if c.appID != "" {
		h = append(h, Header{HeaderAppID, c.appID})
	}
	return h
}

// metadataKeys are the identity headers' access-log keys (the name without its prefix, in snake case), computed once: a
// warm Check is cheap enough that building them per request shows in its profile.
var metadataKeys = func() map[string]string {
	m := make(map[string]string, len(IdentityHeaders))
	for _, name := range IdentityHeaders {
		m[name] = strings.ReplaceAll(strings.TrimPrefix(name, IdentityHeaderPrefix), "-", "_")
	}
	return m
}()

// identityMetadata is the caller's identity for access logs, keyed like its headers without their prefix, with room for
// the keys finish adds.
func identityMetadata(headers []Header) map[string]string {
	m := make(map[string]string, len(headers)+2)
	for _, h := range headers {
		m[metadataKeys[h.Name]] = h.Value
	}
	return m
}

// scopeHeaders holds each known kind's x-authgate-scopes value, so a Check does not join the same scopes again.
var scopeHeaders = func() map[string]string {
	m := make(map[string]string, len(tokens.Kinds))
	for _, k := range tokens.Kinds {
		m[k.Prefix] = joinScopes(k.Scopes)
	}
	return m
}()

func scopeHeader(k tokens.Kind) string {
	if v, ok := scopeHeaders[k.Prefix]; ok {
		return v
	}
	return joinScopes(k.Scopes)
}

func joinScopes(scopes []tokens.Scope) string {
	names := make([]string, len(scopes))
	for i, s := range scopes {
		names[i] = string(s)
	}
	return strings.Join(names, " ")
}
