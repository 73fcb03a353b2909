package deviceflow

import (
	"net/http"
	"strconv"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

const (
	defaultPageLimit = 20
	maxPageLimit     = 100
)

type sessionJSON struct {
	ID          string     `json:"id"`
	ClientID    string     `json:"client_id"`
	DeviceLabel string     `json:"device_label"`
	Prefix      string     `json:"prefix"`
	CreatedAt   time.Time  `json:"created_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	Current     bool       `json:"current"`
}

// sessionPage is Dify's pagination envelope.
type sessionPage struct {
	Data    []sessionJSON `json:"data"`
	Page    int           `json:"page"`
	Limit   int           `json:"limit"`
	Total   int           `json:"total"`
	HasMore bool          `json:"has_more"`
}

// handleListSessions lists the caller's live tokens, newest first (Dify's CLI lists devices with it).
func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.bearer(w, r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	page, apiErr := intParam(q.Get("page"), "page", 1, 1, 1_000_000)
	if apiErr != nil {
		return apiErr
	}
	limit, apiErr := intParam(q.Get("limit"), "limit", defaultPageLimit, 1, maxPageLimit)
	if apiErr != nil {
		return apiErr
	}
	rows, total, err := s.deps.Tokens.ListLive(ctx, c.Token.Subject(), s.now(), tokens.Page{Page: page, Limit: limit})
	if err != nil {
		return err
	}
	out := sessionPage{Data: make([]sessionJSON, 0, len(rows)), Page: page, Limit: limit, Total: total,
		HasMore: page*limit < total}
	for _, t := range rows {
		out.Data = append(out.Data, sessionJSON{ID: t.ID, ClientID: t.ClientID, DeviceLabel: t.DeviceLabel, Prefix: t.Prefix,
			CreatedAt: t.CreatedAt.UTC(), LastUsedAt: utc(t.LastUsedAt), ExpiresAt: t.ExpiresAt.UTC(), Current: t.ID == c.Token.ID})
	}
	noStore(w)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// utc is the stored last use (written by extauthz and by deviceflow's bearer endpoints, at most once per
// TOKEN_LAST_USED_INTERVAL per replica) in UTC, like the other times; nil when the token was never recorded as used.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// intParam reads an optional integer query parameter; a limit above hi is clamped like Dify's, anything unparsable is 400.
func intParam(raw, name string, def, lo, hi int) (int, *apiError) {
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo {
		return 0, errorf(http.StatusBadRequest, codeInvalidRequest, name+" must be an integer of at least "+strconv.Itoa(lo))
	}
	return min(n, hi), nil
}
