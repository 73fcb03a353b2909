package deviceflow

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/authgate/authgate/internal/clientip"
)

// handlerFunc is a handler that reports failure as an error; serve translates it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// serve is the one place where errors become statuses: an *apiError is answered as it says; anything else is a
// dependency failure (Redis, Postgres) and answers 503, so a decision that cannot be made is never an allow.
func (s *Server) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var apiErr *apiError
		if errors.As(err, &apiErr) {
			writeError(w, apiErr.Status, apiErr.Code, apiErr.Message)
			return
		}
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the client went away; nobody reads the answer
		}
		s.log.ErrorContext(r.Context(), "deviceflow request failed", "route", r.Pattern, "err", err)
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "the service is temporarily unavailable; retry later")
	})
}

// clientIP is the caller's address: the peer, or the X-Forwarded-For entry TRUSTED_PROXY_HOPS from the right. A client
// cannot choose it unless an operator trusts a proxy that lets it. Every X-Forwarded-For line counts: a proxy may append its own
// line after one the client sent, and reading only the first would hand the choice back to the client.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	xff := strings.Join(r.Header.Values("X-Forwarded-For"), ",")
	return clientip.FromForwarded(r.RemoteAddr, xff, s.cfg.TrustedProxyHops)
}

// clientBucket is the rate-limit identity of the caller's address (IPv6 by /64).
func (s *Server) clientBucket(r *http.Request) string { return clientip.Bucket(s.clientIP(r)) }
