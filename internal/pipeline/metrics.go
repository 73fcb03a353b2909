package pipeline

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics are the pipeline's instruments (exported as Prometheus by internal/telemetry).
type metrics struct {
	checks           metric.Int64Counter     // authgate_extauthz_checks_total{route, outcome}
	duration         metric.Float64Histogram // authgate_extauthz_check_duration_seconds{route, outcome}
	rateLimitSkipped metric.Int64Counter     // authgate_extauthz_ratelimit_skipped_total{limit="token"|"invalid_bearer_ip"}
	// authgate_extauthz_ratelimit_decisions_total{source="memory"|"redis"}
	rateLimitDecisions metric.Int64Counter
	tokenCache         metric.Int64Counter // authgate_extauthz_token_cache_total{result}
	suspectLookups     metric.Int64Counter // authgate_extauthz_suspect_lookups_total{result="admitted"|"refused"}
	dependencyErrors   metric.Int64Counter // authgate_extauthz_dependency_errors_total{dependency}
	hardExpired        metric.Int64Counter // authgate_extauthz_tokens_hard_expired_total

	// attrs caches the attribute set of each (route, outcome): building one per Check is a measurable share of a warm Check.
	attrs sync.Map // string -> metric.MeasurementOption
}

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("extauthz")
	}
	var out metrics
	var err error
	if out.checks, err = m.Int64Counter("authgate_extauthz_checks",
		metric.WithDescription("Check decisions by route and outcome (allow or the deny code).")); err != nil {
		return nil, err
	}
	if out.duration, err = m.Float64Histogram("authgate_extauthz_check_duration", metric.WithUnit("s"),
		metric.WithDescription("Time to decide a Check."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25)); err != nil {
		return nil, err
	}
	if out.rateLimitSkipped, err = m.Int64Counter("authgate_extauthz_ratelimit_skipped",
		metric.WithDescription("Limiter decisions skipped because Redis was unreachable: the per-token limit "+
			"(RATE_LIMIT_FAIL_OPEN) or the shared per-IP invalid-bearer budget (then counted per replica).")); err != nil {
		return nil, err
	}
	if out.rateLimitDecisions, err = m.Int64Counter("authgate_extauthz_ratelimit_decisions",
		metric.WithDescription("Per-token limiter decisions by where they were made: memory (a token known to be over its "+
			"limit, or a batched local admission) or redis (the script).")); err != nil {
		return nil, err
	}
	if out.tokenCache, err = m.Int64Counter("authgate_extauthz_token_cache",
		metric.WithDescription("Token cache reads by result: hit, miss, invalid (a tombstone), negative (refused from "+
			"memory), error.")); err != nil {
		return nil, err
	}
	if out.suspectLookups, err = m.Int64Counter("authgate_extauthz_suspect_lookups",
		metric.WithDescription("Token lookups from addresses over their invalid-bearer budget: admitted by the suspect "+
			"lane, or refused with 429 because it was empty.")); err != nil {
		return nil, err
	}
	if out.dependencyErrors, err = m.Int64Counter("authgate_extauthz_dependency_errors",
		metric.WithDescription("Dependency failures that denied a Check with 503, by dependency.")); err != nil {
		return nil, err
	}
	if out.hardExpired, err = m.Int64Counter("authgate_extauthz_tokens_hard_expired",
		metric.WithDescription("Expired tokens revoked on presentation (oauth.token_expired).")); err != nil {
		return nil, err
	}
	return &out, nil
}

func (m *metrics) record(ctx context.Context, d Decision, elapsed time.Duration) {
	outcome := "allow"
	if !d.Allow {
		outcome = string(d.Code)
	}
	route := d.Route
	if route == "" {
		route = "none"
	}
	key := route + "\x00" + outcome
	opt, ok := m.attrs.Load(key)
	if !ok {
		opt, _ = m.attrs.LoadOrStore(key, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("route", route), attribute.String("outcome", outcome))))
	}
	attrs := opt.(metric.MeasurementOption)
	// The Check's own context may be past its deadline; the measurement must still be taken.
	ctx = context.WithoutCancel(ctx)
	m.checks.Add(ctx, 1, attrs)
	m.duration.Record(ctx, elapsed.Seconds(), attrs)
}

var (
	cacheResultAttrs    = map[string]metric.AddOption{}
	rateDecidedInMemory = metric.WithAttributeSet(attribute.NewSet(attribute.String("source", "memory")))
	rateDecidedByRedis  = metric.WithAttributeSet(attribute.NewSet(attribute.String("source", "redis")))
	skippedToken        = metric.WithAttributeSet(attribute.NewSet(attribute.String("limit", "token")))
	skippedIPBudget     = metric.WithAttributeSet(attribute.NewSet(attribute.String("limit", "invalid_bearer_ip")))
	suspectAdmitted     = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "admitted")))
	suspectRefused      = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "refused")))
)

func init() {
	for _, r := range []string{"hit", "miss", "invalid", "negative", "error"} {
		cacheResultAttrs[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", r)))
	}
}

func (m *metrics) cacheResult(ctx context.Context, result string) {
	m.tokenCache.Add(ctx, 1, cacheResultAttrs[result])
}

func dependencyAttr(dependency string) metric.AddOption {
	return metric.WithAttributes(attribute.String("dependency", dependency))
}
