package deviceflow

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Rate limits of SPEC §4; the approve/deny limit per account is DEVICE_FLOW_APPROVE_RATE_LIMIT_PER_HOUR.
type limit struct {
	prefix string
	n      int
	window time.Duration
}

var (
	limitDeviceCode     = limit{"rl:deviceflow:code:ip:", 60, time.Hour}
	limitLookup         = limit{"rl:deviceflow:lookup:ip:", 60, 5 * time.Minute}
	limitFailedLookup   = limit{"rl:deviceflow:lookup_failed:ip:", 20, time.Hour}
	limitSSOInitiate    = limit{"rl:deviceflow:sso_initiate:ip:", 60, time.Hour}
	limitApproveExtMail = limit{"rl:deviceflow:approve_external:email:", 10, time.Hour}
	limitMe             = limit{"rl:deviceflow:me:token:", 60, time.Minute}
)

func (s *Server) limitApprove() limit {
	return limit{"rl:deviceflow:approve:account:", s.cfg.ApprovePerHour, time.Hour}
}

// allow counts one request against l for subject and refuses it with 429 rate_limited and Retry-After when the window is
// full. A Redis failure is returned as is (503): the state the request needs lives in the same Redis.
func (s *Server) allow(ctx context.Context, w http.ResponseWriter, l limit, subject string) error {
	d, err := s.deps.Limiter.Allow(ctx, l.prefix+subject, l.n, l.window)
	if err != nil {
		return err
	}
	if !d.Allowed {
		return tooMany(w, d.RetryAfter)
	}
	return nil
}

// tooMany sets Retry-After in whole seconds, rounded up and at least 1.
func tooMany(w http.ResponseWriter, retryAfter time.Duration) error {
	secs := int(math.Ceil(retryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return errorf(http.StatusTooManyRequests, codeRateLimited, "too many requests; retry after "+strconv.Itoa(secs)+" s")
}
