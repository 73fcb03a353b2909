package deviceflow

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/authgate/authgate/internal/clientip"
)

// handlerFunc is a handler that reports failure as an error; serve translates it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// requestBudget bounds the Redis and Postgres calls of one request together, so a hung dependency costs a client at most
// this long (plus what the handler does without them) before it is answered 503. It must stay below claimLease (state.go).
const requestBudget = 1500 * time.Millisecond

// unavailableRetryAfter is the Retry-After of a 503: a claim left by a failed poll has lapsed by then.
const unavailableRetryAfter = claimLease

type outerContextKey struct{}

// outerContext is the request's context without its dependency budget, for the rare call that is not a Redis or Postgres
// call and has a timeout of its own (the enterprise service's sso-initiate).
func outerContext(ctx context.Context) context.Context {
	if outer, ok := ctx.Value(outerContextKey{}).(context.Context); ok {
		return outer
	}
	return ctx
}

// serve is the one place where errors become statuses: an *apiError is answered as it says; anything else is a
// dependency failure (Redis, Postgres, a deadline of the request budget) and answers 503 temporarily_unavailable with
// Retry-After, so a decision that cannot be made is never an allow. Every handler runs under the request budget.
func (s *Server) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outer := r.Context()
		ctx, cancel := context.WithTimeout(context.WithValue(outer, outerContextKey{}, outer), requestBudget)
		defer cancel()
		err := h(w, r.WithContext(ctx))
		if err == nil {
			return
		}
		var apiErr *apiError
		if errors.As(err, &apiErr) {
			writeError(w, apiErr.Status, apiErr.Code, apiErr.Message)
			return
		}
		if outer.Err() != nil {
			return // the client went away; nobody reads the answer
		}
		dep := dependencyOf(err)
		s.metrics.dependencyError(outer, dep)
		s.throttle.Log(outer, s.log, slog.LevelError, "request-failed:"+dep, "deviceflow: request failed: dependency unavailable",
			"dependency", dep, "route", r.Pattern, "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(unavailableRetryAfter/time.Second)))
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
