package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authgate/authgate/internal/config"
	"github.com/authgate/authgate/internal/deviceflow"
	"github.com/authgate/authgate/internal/envoyshim"
	"github.com/authgate/authgate/internal/extauthz"
	"github.com/authgate/authgate/internal/ratelimit"
	"github.com/authgate/authgate/internal/redisclient"
	"github.com/authgate/authgate/internal/store/memory"
	"github.com/authgate/authgate/internal/telemetry"
	"github.com/authgate/authgate/internal/tokencache"
)

// devSecretKey signs the dev console sessions and SSO envelopes unless SECRET_KEY is set. Public on purpose: devstack
// holds nothing worth protecting.
const devSecretKey = "devstack-not-a-secret"

// Options are devstack's listen addresses (":0" picks a free port) and where it reads the services' other settings.
type Options struct {
	ShimAddr, DeviceflowAddr, ExtauthzAddr, AdminAddr, UpstreamAddr string
	// Lookup supplies the services' environment (OPENAPI_RATE_LIMIT_PER_TOKEN, FORWARD_AUTHORIZATION, LOG_LEVEL, ...);
	// devstack sets the stores, addresses and public URLs itself. nil reads nothing.
	Lookup config.Lookup
	// LogOutput receives the JSON logs; default os.Stderr.
	LogOutput io.Writer
}

// defaultOptions listen on loopback only: devstack's SECRET_KEY is public and /signin makes anyone who reaches it the demo
// account. -shim-addr :8000 (and so on) exposes it on purpose, e.g. from inside a container.
func defaultOptions() Options {
	return Options{ShimAddr: "127.0.0.1:8000", DeviceflowAddr: "127.0.0.1:8080", ExtauthzAddr: "127.0.0.1:9191",
		AdminAddr: "127.0.0.1:9090", UpstreamAddr: "127.0.0.1:0"}
}

// Addrs are the base URLs (and extauthz's gRPC address) devstack is serving on.
type Addrs struct {
	Shim, Deviceflow, Admin, Upstream string // http://host:port
	Extauthz                          string // host:port
}

// run serves until ctx ends. ready, if set, is called once everything accepts connections.
func run(ctx context.Context, opts Options, stdout io.Writer, ready func(Addrs)) error {
	lns, err := listenAll(opts)
	if err != nil {
		return err
	}
	defer lns.closeAll()
	addrs := Addrs{Shim: baseURL(lns.shim.Addr()), Deviceflow: baseURL(lns.deviceflow.Addr()),
		Admin: baseURL(lns.admin.Addr()), Upstream: baseURL(lns.upstream.Addr()), Extauthz: hostPort(lns.extauthz.Addr())}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mr, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer mr.Close()
	redisURL := "redis://" + mr.Addr() + "/0"

	// The services read their usual configuration, with the stores, addresses and public URLs fixed by devstack:
	// verification_uri and the sign-in link point at deviceflow's port, the issuer at the shim.
	lookup := overlay(opts.Lookup, map[string]string{
		"DATABASE_URL":       "memory://devstack",
		"REDIS_URL":          redisURL,
		"EXTAUTHZ_GRPC_ADDR": lns.extauthz.Addr().String(),
		"ADMIN_ADDR":         lns.admin.Addr().String(),
		"DEVICEFLOW_ADDR":    lns.deviceflow.Addr().String(),
		"CONSOLE_WEB_URL":    addrs.Deviceflow,
		"CONSOLE_API_URL":    addrs.Shim,
		"COOKIE_DOMAIN":      "",
		"ENTERPRISE_ENABLED": "false",
		// The demo upstream trusts the identity headers and checks no membership itself, so the proxy must.
		"MEMBERSHIP_ENFORCED_UPSTREAM": "false",
		// The shim runs in this process and health-checks nothing: no proxy to wait for when stopping.
		"SHUTDOWN_DRAIN_DELAY": "0",
	}, map[string]string{"SECRET_KEY": devSecretKey})
	ecfg, ewarn, err := config.LoadExtauthz(lookup)
	if err != nil {
		return err
	}
	dcfg, dwarn, err := config.LoadDeviceflow(lookup, config.DevStack())
	if err != nil {
		return err
	}
	tel, err := telemetry.Setup(ctx, "devstack", telemetry.Config{OTLPEndpoint: ecfg.OTLPEndpoint, LogLevel: ecfg.LogLevel,
		LogOutput: opts.LogOutput})
	if err != nil {
		return err
	}
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(shutdownCtx)
	}()
	log := tel.Logger
	for _, w := range append(ewarn, dwarn...) {
		log.WarnContext(ctx, "configuration adjusted", "detail", w)
	}

	store := memory.New()
	store.Seed(demoFixture())
	rdb, err := redisclient.Open(redisclient.Options{URL: "redis://" + mr.Addr()})
	if err != nil {
		return err
	}
	defer rdb.Close()

	authz, err := extauthz.Start(ctx, ecfg, extauthz.Deps{Tokens: store, Directory: store, Redis: rdb, Telemetry: tel},
		lns.extauthz, lns.admin)
	if err != nil {
		return err
	}
	lns.extauthz, lns.admin = nil, nil // owned by the service now
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = authz.Shutdown(shutdownCtx)
	}()

	deviceflowHost := hostPort(lns.deviceflow.Addr())
	df, err := deviceflow.Start(ctx, dcfg, deviceflow.Deps{
		Tokens:    store,
		Directory: store,
		Redis:     rdb,
		Limiter:   ratelimit.NewSlidingWindow(rdb),
		Revoker:   tokencache.NewRevoker(rdb, dcfg.TokenCacheTTL),
	}, tel, lns.deviceflow, nil, deviceflow.StartOptions{
		Routes: map[string]http.Handler{"GET /signin": devSignIn(dcfg.SecretKey, time.Now)},
	})
	if err != nil {
		return err
	}
	lns.deviceflow = nil // owned by the service now
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = df.Shutdown(shutdownCtx)
	}()

	conn, err := grpc.NewClient(addrs.Extauthz, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("extauthz client: %w", err)
	}
	defer conn.Close()
	shim, err := envoyshim.New(shimConfig(authv3.NewAuthorizationClient(conn),
		&url.URL{Scheme: "http", Host: deviceflowHost},
		&url.URL{Scheme: "http", Host: hostPort(lns.upstream.Addr())}, log))
	if err != nil {
		return err
	}

	servers := []*served{
		{name: "shim", srv: newHTTPServer(shim, log), ln: lns.shim},
		{name: "upstream", srv: newHTTPServer(newDemoAPI(store, demoApps(), log), log), ln: lns.upstream},
	}
	lns.shim, lns.upstream = nil, nil
	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", s.name, err)
			}
		})
	}
	printWalkthrough(stdout, addrs, dcfg.KnownClientIDs[0])
	if ready != nil {
		ready(addrs)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	shutdownCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	errs := []error{serveErr}
	for _, s := range servers {
		errs = append(errs, s.srv.Shutdown(shutdownCtx))
	}
	wg.Wait()
	log.InfoContext(ctx, "devstack stopped")
	return errors.Join(errs...)
}

type served struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

type listeners struct {
	shim, deviceflow, extauthz, admin, upstream net.Listener
}

// listenAll binds every port first, so a port in use fails at once and ":0" ports are known before the URLs are built.
func listenAll(opts Options) (*listeners, error) {
	l := &listeners{}
	for _, b := range []struct {
		flag, addr string
		ln         *net.Listener
	}{
		{"-shim-addr", opts.ShimAddr, &l.shim},
		{"-deviceflow-addr", opts.DeviceflowAddr, &l.deviceflow},
		{"-extauthz-addr", opts.ExtauthzAddr, &l.extauthz},
		{"-admin-addr", opts.AdminAddr, &l.admin},
		{"-upstream-addr", opts.UpstreamAddr, &l.upstream},
	} {
		ln, err := net.Listen("tcp", b.addr)
		if err != nil {
			l.closeAll()
			return nil, fmt.Errorf("%s: %w", b.flag, err)
		}
		*b.ln = ln
	}
	return l, nil
}

func (l *listeners) closeAll() {
	for _, ln := range []net.Listener{l.shim, l.deviceflow, l.extauthz, l.admin, l.upstream} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// hostPort names a bound address the way a browser on this machine reaches it: localhost for a wildcard bind.
func hostPort(a net.Addr) string {
	tcp := a.(*net.TCPAddr)
	host := "localhost"
	if !tcp.IP.IsUnspecified() {
		host = tcp.IP.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

func baseURL(a net.Addr) string { return "http://" + hostPort(a) }

// overlay reads fixed first, then the caller's environment, then defaults.
func overlay(env config.Lookup, fixed, defaults map[string]string) config.Lookup {
	return func(name string) (string, bool) {
		if v, ok := fixed[name]; ok {
			return v, true
		}
		if env != nil {
			if v, ok := env(name); ok {
				return v, true
			}
		}
		v, ok := defaults[name]
		return v, ok
	}
}

func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
