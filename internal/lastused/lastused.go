// Package lastused records when tokens were last used (oauth_access_tokens.last_used_at) off the request path: a request
// only notes its token's use in memory, at most once per token per interval, and a background flusher writes the noted
// uses to Postgres in batches. Nothing a request does waits on Postgres: when the queue is full, or a write fails or is slow,
// the uses are dropped and counted, and a later use records the token again.
package lastused

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokens"
)

// Store writes a batch of uses; tokens.Store is one.
type Store interface {
	RecordLastUsed(ctx context.Context, uses []tokens.Use) (written int, err error)
}

// Defaults of Options. Larger batches cost Postgres less per row (one statement, one commit, one plan): at 1,000 first
// uses a second, flushes of 500 rows took about 4% of one core, against 8-11% for flushes every 100 ms of at most 100
// rows, and the cold Checks' latency tail was no better with the smaller, more frequent flushes.
const (
	DefaultFlushEvery   = time.Second
	DefaultBatchSize    = 500
	DefaultQueueSize    = 10_000
	DefaultWriteTimeout = 2 * time.Second
	DefaultMaxTokens    = 100_000
)

// Options configure a Recorder. Zero values take the defaults above.
type Options struct {
	// Interval is the least time between two recorded uses of one token (TOKEN_LAST_USED_INTERVAL): last_used_at is then
	// exact to within Interval, per replica. Zero or less disables recording (New returns a nil Recorder, which records
	// nothing).
	Interval time.Duration
	// FlushEvery is how often noted uses are written; a batch of BatchSize distinct tokens is written at once.
	FlushEvery time.Duration
	BatchSize  int
	// QueueSize bounds the uses noted but not yet taken by the flusher; a use that finds it full is dropped.
	QueueSize int
	// WriteTimeout bounds each write, so a hung Postgres holds one of the pool's connections for at most this long.
	WriteTimeout time.Duration
	// MaxTokens bounds the tokens remembered as recorded within Interval; past it the least recently used are forgotten
	// (and may be recorded again within the interval).
	MaxTokens int
	// Now is the clock uses are stamped with; it must be the clock of the service's mints and revocations. nil: time.Now.
	Now func() time.Time
	// Logger receives failures, at most one line per kind per 10 s. nil: slog.Default().
	Logger *slog.Logger
	// Meter and MetricPrefix name the counter MetricPrefix + "_last_used" (e.g. authgate_extauthz_last_used_total).
	Meter        metric.Meter
	MetricPrefix string
}

// Recorder notes token uses and writes them in the background. A nil *Recorder is valid and records nothing. Call Close to
// write what is pending.
type Recorder struct {
	store        Store
	interval     time.Duration
	flushEvery   time.Duration
	batchSize    int
	writeTimeout time.Duration
	now          func() time.Time
	logger       *slog.Logger
	throttle     *telemetry.Throttle

	// mu makes "not recorded within the interval, so note it" one step, so concurrent uses of a token note it once.
	mu     sync.Mutex
	noted  *expirable.LRU[string, time.Time] // token id -> time of the use last noted
	queue  chan tokens.Use
	closed atomic.Bool

	counter                                   metric.Int64Counter
	written, unchanged, dropped, failed, late metric.MeasurementOption

	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	closeCtx  context.Context // the context Close was given, for the final write
	closeErr  error
}

// New starts a recorder writing to store; nil when opts.Interval disables recording.
func New(store Store, opts Options) (*Recorder, error) {
	if opts.Interval <= 0 {
		return nil, nil
	}
	if store == nil {
		return nil, errors.New("lastused: a store is required")
	}
	r := &Recorder{
		store:        store,
		interval:     opts.Interval,
		flushEvery:   orDefault(opts.FlushEvery, DefaultFlushEvery),
		batchSize:    orDefault(opts.BatchSize, DefaultBatchSize),
		writeTimeout: orDefault(opts.WriteTimeout, DefaultWriteTimeout),
		now:          opts.Now,
		logger:       opts.Logger,
		throttle:     telemetry.NewThrottle(0),
		noted:        expirable.NewLRU[string, time.Time](orDefault(opts.MaxTokens, DefaultMaxTokens), nil, opts.Interval),
		queue:        make(chan tokens.Use, orDefault(opts.QueueSize, DefaultQueueSize)),
		stop:         make(chan struct{}),
		stopped:      make(chan struct{}),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	meter := opts.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("lastused")
	}
	prefix := opts.MetricPrefix
	if prefix == "" {
		prefix = "authgate"
	}
	var err error
	if r.counter, err = meter.Int64Counter(prefix+"_last_used",
		metric.WithDescription("Token uses for last_used_at, by result: written (a row moved forward), unchanged (the row "+
			"was revoked, rotated since, already later or held by another writer), dropped (the queue was full), failed "+
			"(the write failed or timed out), late (noted after shutdown began).")); err != nil {
		return nil, fmt.Errorf("lastused: metrics: %w", err)
	}
	result := func(v string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("result", v)))
	}
	r.written, r.unchanged, r.dropped, r.failed, r.late =
		result("written"), result("unchanged"), result("dropped"), result("failed"), result("late")
	go r.run()
	return r, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Record notes a use of tokenID now. It never blocks: a token already noted within the interval costs a map lookup, and a
// use that finds the queue full is dropped (and counted), leaving the token to be noted again by its next use.
func (r *Recorder) Record(tokenID string) {
	if r == nil || tokenID == "" {
		return
	}
	if r.closed.Load() {
		r.counter.Add(context.Background(), 1, r.late)
		return
	}
	now := r.now()
	r.mu.Lock()
	if last, ok := r.noted.Peek(tokenID); ok && now.Sub(last) < r.interval {
		r.mu.Unlock()
		return
	}
	r.noted.Add(tokenID, now)
	r.mu.Unlock()
	select {
	case r.queue <- tokens.Use{TokenID: tokenID, At: now}:
	default:
		r.forget([]tokens.Use{{TokenID: tokenID, At: now}})
		r.counter.Add(context.Background(), 1, r.dropped)
		r.throttle.Log(context.Background(), r.logger, slog.LevelWarn, "lastused:queue-full",
			"last-used queue full; dropping token uses (Postgres slow or down?)", "queue", cap(r.queue))
	}
}

// forget lets the next use of each token be noted again, unless a later use was noted meanwhile.
func (r *Recorder) forget(uses []tokens.Use) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range uses {
		if last, ok := r.noted.Peek(u.TokenID); ok && last.Equal(u.At) {
			r.noted.Remove(u.TokenID)
		}
	}
}

// Close stops the flusher and writes what is pending, within ctx and the write timeout. Uses recorded afterwards are
// dropped. It returns the final write's error, or ctx's if the flusher did not finish in time.
func (r *Recorder) Close(ctx context.Context) error {
	if r == nil {
		return nil
	}
	r.closeOnce.Do(func() {
		r.closeCtx = ctx
		r.closed.Store(true)
		close(r.stop)
	})
	select {
	case <-r.stopped:
		return r.closeErr
	case <-ctx.Done():
		return fmt.Errorf("lastused: close: %w", ctx.Err())
	}
}

// run takes noted uses off the queue and writes them every flushEvery, or as soon as batchSize distinct tokens wait.
func (r *Recorder) run() {
	defer close(r.stopped)
	ticker := time.NewTicker(r.flushEvery)
	defer ticker.Stop()
	pending := map[string]time.Time{}
	add := func(u tokens.Use) {
		if at, ok := pending[u.TokenID]; !ok || u.At.After(at) {
			pending[u.TokenID] = u.At
		}
	}
	for {
		select {
		case u := <-r.queue:
			add(u)
			if len(pending) >= r.batchSize {
				_ = r.flush(context.Background(), pending)
			}
		case <-ticker.C:
			_ = r.flush(context.Background(), pending)
		case <-r.stop:
			for len(r.queue) > 0 {
				add(<-r.queue)
			}
			r.closeErr = r.flush(r.closeCtx, pending)
			return
		}
	}
}

// flush writes pending and empties it. A failed write drops its uses (counted) and forgets them, so each token's next use
// is noted again rather than waiting out the interval.
func (r *Recorder) flush(ctx context.Context, pending map[string]time.Time) error {
	if len(pending) == 0 {
		return nil
	}
	uses := make([]tokens.Use, 0, len(pending))
	for id, at := range pending {
		uses = append(uses, tokens.Use{TokenID: id, At: at})
	}
	clear(pending)
	ctx, cancel := context.WithTimeout(ctx, r.writeTimeout)
	written, err := r.store.RecordLastUsed(ctx, uses)
	cancel()
	bg := context.Background()
	if err != nil {
		r.counter.Add(bg, int64(len(uses)), r.failed)
		r.forget(uses)
		r.throttle.Log(bg, r.logger, slog.LevelWarn, "lastused:write",
			"writing last-used times failed; dropped them", "uses", len(uses), "error", err)
		return fmt.Errorf("lastused: write %d uses: %w", len(uses), err)
	}
	r.counter.Add(bg, int64(written), r.written)
	if rest := len(uses) - written; rest > 0 {
		r.counter.Add(bg, int64(rest), r.unchanged)
	}
	return nil
}
