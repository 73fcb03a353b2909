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
	// redisDown is set once a Redis call of this Check failed: the later ones are skipped rather than each waiting out
	// its own timeout, so a Redis that hangs (a partition) leaves Postgres the rest of the deadline, as a refusing one does.
	redisDown bool
}

func (c *caller) identityHeaders() []Header {
	scopes := make([]string, len(c.kind.Scopes))
	for i, s := range c.kind.Scopes {
		scopes[i] = string(s)
	}
	h := []Header{
		{HeaderSubjectType, string(c.kind.Subject)},
		{HeaderSubjectEmail, c.entry.SubjectEmail},
		{HeaderSubjectIssuer, c.entry.SubjectIssuer},
	}
	if c.entry.AccountID != "" {
		h = append(h, Header{HeaderAccountID, c.entry.AccountID})
	}
	h = append(h,
		Header{HeaderTokenID, c.entry.TokenID},
		Header{HeaderClientID, c.entry.ClientID},
		Header{HeaderScopes, strings.Join(scopes, " ")},
	)
	if c.tenantID != "" {
		h = append(h, Header{HeaderTenantID, c.tenantID})
	}
	if c.appID != "" {
		h = append(h, Header{HeaderAppID, c.appID})
	}
	return h
}

// metadata is the caller's identity for access logs, keyed like the headers without their prefix.
func (c *caller) metadata() map[string]string {
	m := map[string]string{}
	for _, h := range c.identityHeaders() {
		m[strings.ReplaceAll(strings.TrimPrefix(h.Name, IdentityHeaderPrefix), "-", "_")] = h.Value
	}
	return m
}
