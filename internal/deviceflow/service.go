package deviceflow

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/github"
	"github.com/authgate/authgate/internal/lastused"
	"github.com/authgate/authgate/internal/telemetry"
)

// StartOptions are what an embedding (the dev stack) adds to a deviceflow process.
type StartOptions struct {
	// Routes are served next to deviceflow's own, on the same listener (the dev stack's sign-in page).
	Routes map[string]http.Handler
}

// Service is a running deviceflow: the device-flow API and /device page, the admin server and the pruner.
type Service struct {
	log      *slog.Logger
	api      *http.Server
	admin    *http.Server // nil when the process shares another admin listener
	draining atomic.Bool
	errc     chan error

	stopBackground context.CancelFunc
	background     sync.WaitGroup
	lastUsed       *lastused.Recorder // the one Start built, which Shutdown closes
}

// Start builds the server from cfg over deps and serves the API on apiLn and /healthz, /readyz, /metrics on adminLn (nil:
// no admin server). It owns the listeners from then on; the stores in deps stay the caller's. cmd/deviceflow, the dev stack
// and the tests all assemble deviceflow here.
func Start(ctx context.Context, cfg config.Deviceflow, deps Deps, tel *telemetry.Telemetry, apiLn, adminLn net.Listener,
	opts StartOptions) (*Service, error) {
	if deps.Logger == nil {
		deps.Logger = tel.Logger
	}
	if deps.Meter == nil {
		deps.Meter = tel.Meter
	}
	var lastUsed *lastused.Recorder
	if deps.LastUsed == nil && deps.Tokens != nil {
		var err error
		if lastUsed, err = lastused.New(deps.Tokens, lastused.Options{Interval: cfg.TokenLastUsedInterval, Now: deps.Now,
			Logger: deps.Logger, Meter: deps.Meter, MetricPrefix: "authgate_deviceflow"}); err != nil {
			return nil, err
		}
		deps.LastUsed = lastUsed
	}
	if deps.GitHub == nil && cfg.GitHub.Enabled() {
		deps.GitHub = github.New(github.Config{ClientID: cfg.GitHub.ClientID, ClientSecret: cfg.GitHub.ClientSecret,
			OAuthURL: cfg.GitHub.OAuthURL, APIURL: cfg.GitHub.APIURL, Enterprise: cfg.GitHub.Enterprise()})
	}
	srv, err := New(deps, Config{
		SecretKey:         cfg.SecretKey,
		ConsoleWebURL:     cfg.ConsoleWebURL,
		ConsoleAPIURL:     cfg.ConsoleAPIURL,
		CookieDomain:      cfg.CookieDomain,
		KnownClientIDs:    cfg.KnownClientIDs,
		ApprovePerHour:    cfg.ApprovePerHour,
		TrustedProxyHops:  cfg.TrustedProxyHops,
		TTL:               cfg.TTL,
		EnterpriseEnabled: cfg.EnterpriseEnabled,
	})
	if err != nil {
		_ = lastUsed.Close(ctx)
		return nil, err
	}
	handler := srv.Handler()
	if len(opts.Routes) > 0 {
		mux := http.NewServeMux()
		for pattern, h := range opts.Routes {
			mux.Handle(pattern, h)
		}
		mux.Handle("/", handler)
		handler = mux
	}

	s := &Service{log: deps.Logger, errc: make(chan error, 2), lastUsed: lastUsed}
	s.api = newHTTPServer(otelhttp.NewHandler(handler, "deviceflow"), deps.Logger)
	// Readiness reflects the process, not Redis or Postgres: every replica shares them, so an outage that failed readiness
	// would take the whole Service out at once instead of letting each request answer for itself.
	if adminLn != nil {
		s.admin = newHTTPServer(telemetry.AdminHandler(func() bool { return !s.draining.Load() }, tel.MetricsHandler()),
			deps.Logger)
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopBackground = cancel
	if cfg.PruneEnabled {
		pruner := NewPruner(deps.Tokens, cfg.RetentionDays, deps.Logger, nil)
		s.background.Go(func() { pruner.Run(bg, cfg.PruneInterval) })
	}
	s.serve(s.api, apiLn)
	if s.admin != nil {
		s.serve(s.admin, adminLn)
	}
	attrs := []any{"addr", apiLn.Addr().String(), "enterprise", cfg.EnterpriseEnabled, "github_sign_in", deps.GitHub != nil}
	if adminLn != nil {
		attrs = append(attrs, "admin_addr", adminLn.Addr().String())
	}
	deps.Logger.InfoContext(ctx, "deviceflow listening", attrs...)
	return s, nil
}

func (s *Service) serve(srv *http.Server, ln net.Listener) {
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
}

// Failed delivers the error of a server that stopped by itself (its listener failed).
func (s *Service) Failed() <-chan error { return s.errc }

// Shutdown fails readiness first, so the load balancer stops sending, then drains in-flight requests (up to ctx) and stops
// the pruner.
func (s *Service) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	errs := []error{s.api.Shutdown(ctx)}
	if s.admin != nil {
		errs = append(errs, s.admin.Shutdown(ctx))
	}
	if err := s.lastUsed.Close(ctx); err != nil { // the requests have drained: write their last uses
		s.log.WarnContext(ctx, "last-used times not written at shutdown", "error", err)
	}
	s.stopBackground()
	s.background.Wait()
	s.log.InfoContext(ctx, "deviceflow stopped")
	return errors.Join(errs...)
}

// newHTTPServer bounds every phase of a request, so a slow or stalled client cannot hold a connection for ever.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
