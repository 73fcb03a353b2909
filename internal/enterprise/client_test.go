package enterprise_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/enterprise"
	"github.com/authgate/authgate/internal/enterprise/enterprisetest"
	"github.com/authgate/authgate/internal/testenv"
)

const (
	appID  = "5b0f3f4e-2c1a-4c55-9d8e-0a4c3e7f1b21"
	userID = "0d7c1e9a-6b7e-4f1d-8a5c-2e3f4a5b6c7d"
)

func newClient(t testing.TB, srv *enterprisetest.Server, opts enterprise.Options) *enterprise.Client {
	t.Helper()
	return enterprise.New(srv.URL(), srv.SecretKey(), opts)
}

func TestHappyPaths(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{})
	ctx := t.Context()

	srv.SetLicenseStatus(enterprise.LicenseExpiring)
	if got, err := c.LicenseStatus(ctx); err != nil || got != enterprise.LicenseExpiring {
		t.Fatalf("LicenseStatus = %q, %v", got, err)
	}

	srv.SetAccessMode(appID, enterprise.AccessSSOVerified)
	if got, err := c.WebAppAccessMode(ctx, appID); err != nil || got != enterprise.AccessSSOVerified {
		t.Fatalf("WebAppAccessMode = %q, %v", got, err)
	}
	if got, err := c.WebAppAccessMode(ctx, "unknown-app"); err != nil || got != enterprise.AccessPrivate {
		t.Fatalf("WebAppAccessMode(unknown) = %q, %v; want private", got, err)
	}

	if ok, err := c.IsUserAllowed(ctx, userID, appID); err != nil || ok {
		t.Fatalf("IsUserAllowed before AllowUser = %v, %v", ok, err)
	}
	srv.AllowUser(userID, appID)
	if ok, err := c.IsUserAllowed(ctx, userID, appID); err != nil || !ok {
		t.Fatalf("IsUserAllowed after AllowUser = %v, %v", ok, err)
	}

	srv.SetSSOInitiateURL("https://idp.example.test/login?x=1")
	if got, err := c.SSOInitiate(ctx, "signed.state.jws"); err != nil || got != "https://idp.example.test/login?x=1" {
		t.Fatalf("SSOInitiate = %q, %v", got, err)
	}

	for _, r := range srv.Requests() {
		if r.Header.Get(enterprisetest.SecretHeader) != srv.SecretKey() {
			t.Errorf("%s %s sent secret header %q", r.Method, r.Path, r.Header.Get(enterprisetest.SecretHeader))
		}
	}
	reqs := srv.Requests()
	last := reqs[len(reqs)-1]
	var body map[string]string
	if err := json.Unmarshal(last.Body, &body); err != nil || body["signed_state"] != "signed.state.jws" {
		t.Fatalf("sso-initiate body = %s (%v)", last.Body, err)
	}
	if ct := last.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("sso-initiate content-type = %q", ct)
	}
}

func TestQueryValuesAreEscaped(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{})
	hostile := "a&userId=admin#frag/../x"
	if _, err := c.IsUserAllowed(t.Context(), hostile, appID); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	q := reqs[len(reqs)-1].Query
	if got := q["userId"]; len(got) != 1 || got[0] != hostile {
		t.Fatalf("userId arrived as %q", got)
	}
	if reqs[len(reqs)-1].Path != "/webapp/permission" {
		t.Fatalf("path = %q", reqs[len(reqs)-1].Path)
	}
}

func TestWrongSecretIsUnavailable(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := enterprise.New(srv.URL(), "wrong", enterprise.Options{})
	if _, err := c.WebAppAccessMode(t.Context(), appID); !errors.Is(err, enterprise.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestFailuresAreUnavailable(t *testing.T) {
	oversized := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"accessMode":"public","pad":"` + strings.Repeat("x", 2048) + `"}`))
	})
	malformed := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"accessMode":`))
	})
	empty := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) })
	cases := map[string]func(*enterprisetest.Server){
		"5xx":       func(s *enterprisetest.Server) { s.FailWith(http.StatusServiceUnavailable) },
		"4xx":       func(s *enterprisetest.Server) { s.FailWith(http.StatusNotFound) },
		"timeout":   func(s *enterprisetest.Server) { s.SetDelay(time.Minute) },
		"oversized": func(s *enterprisetest.Server) { s.Override(oversized) },
		"malformed": func(s *enterprisetest.Server) { s.Override(malformed) },
		"empty":     func(s *enterprisetest.Server) { s.Override(empty) },
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			srv := enterprisetest.NewServer(t)
			c := newClient(t, srv, enterprise.Options{HTTPTimeout: 100 * time.Millisecond, MaxBody: 1024})
			srv.SetAccessMode(appID, enterprise.AccessPublic)
			breakIt(srv)
			mode, err := c.WebAppAccessMode(t.Context(), appID)
			if !errors.Is(err, enterprise.ErrUnavailable) || mode != "" {
				t.Fatalf("WebAppAccessMode = %q, %v; want ErrUnavailable", mode, err)
			}
		})
	}
}

func TestCallerDeadlineBoundsTheCall(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	srv.SetDelay(time.Minute)
	c := newClient(t, srv, enterprise.Options{HTTPTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := c.IsUserAllowed(ctx, userID, appID); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, enterprise.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call outlived the caller's deadline")
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var followed atomic.Bool
	srv := enterprisetest.NewServer(t)
	target := enterprisetest.NewServer(t)
	target.Override(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		followed.Store(true)
		_, _ = w.Write([]byte(`{"accessMode":"public"}`))
	}))
	srv.Override(http.RedirectHandler(target.URL()+"/webapp/access-mode/id", http.StatusFound))
	c := newClient(t, srv, enterprise.Options{})
	if _, err := c.WebAppAccessMode(t.Context(), appID); !errors.Is(err, enterprise.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if followed.Load() || target.RequestCount() != 0 {
		t.Fatal("redirect was followed (and the secret header sent elsewhere)")
	}
}

func TestSSOInitiateRejectsNonHTTPURL(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{})
	for _, u := range []string{"javascript:alert(1)", "/relative", ""} {
		srv.SetSSOInitiateURL(u)
		if got, err := c.SSOInitiate(t.Context(), "state"); !errors.Is(err, enterprise.ErrUnavailable) {
			t.Errorf("SSOInitiate with answer %q = %q, %v; want ErrUnavailable", u, got, err)
		}
	}
}

func TestBreakerOpensOnFailures(t *testing.T) {
	for name, breakIt := range map[string]func(*enterprisetest.Server){
		"5xx":  func(s *enterprisetest.Server) { s.FailWith(http.StatusBadGateway) },
		"hung": func(s *enterprisetest.Server) { s.SetDelay(time.Minute) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := enterprisetest.NewServer(t)
			c := newClient(t, srv, enterprise.Options{BreakerFailures: 3, BreakerOpenFor: time.Hour})
			breakIt(srv)
			call := func() error {
				// A Check-sized deadline: a hung service must trip the breaker through it.
				ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
				defer cancel()
				_, err := c.WebAppAccessMode(ctx, appID)
				return err
			}
			for range 3 {
				if err := call(); !errors.Is(err, enterprise.ErrUnavailable) {
					t.Fatalf("err = %v", err)
				}
			}
			sent := srv.RequestCount()
			for range 20 {
				if err := call(); !errors.Is(err, enterprise.ErrUnavailable) {
					t.Fatalf("err while open = %v", err)
				}
			}
			if extra := srv.RequestCount() - sent; extra != 0 {
				t.Fatalf("%d calls reached the service while the breaker was open", extra)
			}
		})
	}
}

func TestBreakerClosesAfterRecovery(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	var transitions atomic.Int32
	c := newClient(t, srv, enterprise.Options{
		BreakerFailures: 2,
		BreakerOpenFor:  50 * time.Millisecond,
		OnBreakerChange: func(_, _ string) { transitions.Add(1) },
	})
	ctx := t.Context()
	srv.FailWith(http.StatusBadGateway)
	testenv.Eventually(t, 5*time.Second, "the breaker to open", func() bool {
		_, _ = c.WebAppAccessMode(ctx, appID)
		return transitions.Load() >= 1
	})
	srv.FailWith(0)
	srv.SetAccessMode(appID, enterprise.AccessPublic)
	testenv.Eventually(t, 5*time.Second, "the breaker to close after recovery", func() bool {
		mode, err := c.WebAppAccessMode(ctx, appID)
		return err == nil && mode == enterprise.AccessPublic
	})
	if transitions.Load() < 3 { // closed -> open -> half-open -> closed
		t.Fatalf("saw %d breaker transitions, want at least 3", transitions.Load())
	}
}

func TestClientErrorsDoNotOpenBreaker(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{BreakerFailures: 2, BreakerOpenFor: time.Hour})
	srv.FailWith(http.StatusNotFound)
	for range 5 {
		_, _ = c.WebAppAccessMode(t.Context(), appID)
	}
	srv.FailWith(0)
	if _, err := c.WebAppAccessMode(t.Context(), appID); err != nil {
		t.Fatalf("4xx answers opened the breaker: %v", err)
	}
}

func TestCallerCancelDoesNotOpenBreaker(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{BreakerFailures: 1, BreakerOpenFor: time.Hour})
	srv.SetDelay(time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		testenv.Eventually(t, 5*time.Second, "the call to arrive", func() bool { return srv.RequestCount() == 1 })
		cancel()
	}()
	if _, err := c.WebAppAccessMode(ctx, appID); !errors.Is(err, enterprise.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	srv.SetDelay(0)
	if _, err := c.WebAppAccessMode(t.Context(), appID); err != nil {
		t.Fatalf("a cancelled caller opened the breaker: %v", err)
	}
}

func TestLicenseIsCached(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{})
	ctx := t.Context()
	srv.SetLicenseStatus(enterprise.LicenseActive)
	for range 10 {
		if got, err := c.LicenseStatus(ctx); err != nil || got != enterprise.LicenseActive {
			t.Fatalf("LicenseStatus = %q, %v", got, err)
		}
	}
	srv.SetLicenseStatus(enterprise.LicenseExpired)
	srv.FailWith(http.StatusInternalServerError)
	if got, err := c.LicenseStatus(ctx); err != nil || got != enterprise.LicenseActive {
		t.Fatalf("cached LicenseStatus = %q, %v", got, err)
	}
	if n := srv.RequestCount(); n != 1 {
		t.Fatalf("service saw %d /info calls, want 1", n)
	}
}

func TestLicenseCacheExpires(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{LicenseTTL: 20 * time.Millisecond})
	ctx := t.Context()
	if got, err := c.LicenseStatus(ctx); err != nil || got != enterprise.LicenseActive {
		t.Fatalf("LicenseStatus = %q, %v", got, err)
	}
	srv.SetLicenseStatus(enterprise.LicenseLost)
	testenv.Eventually(t, 5*time.Second, "the new license status", func() bool {
		got, err := c.LicenseStatus(ctx)
		return err == nil && got == enterprise.LicenseLost
	})
	srv.SetLicenseStatus("")
	testenv.Eventually(t, 5*time.Second, "a missing License to read as none", func() bool {
		got, err := c.LicenseStatus(ctx)
		return err == nil && got == enterprise.LicenseNone
	})
}

func TestLicenseFailureIsNotCached(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	c := newClient(t, srv, enterprise.Options{})
	srv.FailWith(http.StatusServiceUnavailable)
	if _, err := c.LicenseStatus(t.Context()); !errors.Is(err, enterprise.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	srv.FailWith(0)
	if got, err := c.LicenseStatus(t.Context()); err != nil || got != enterprise.LicenseActive {
		t.Fatalf("LicenseStatus after recovery = %q, %v", got, err)
	}
}

// FuzzResponses feeds arbitrary 200 bodies to every call: each must answer or fail with ErrUnavailable, never panic.
func FuzzResponses(f *testing.F) {
	for _, seed := range []string{
		`{"License":{"status":"active"}}`, `{"license":{"status":"expiring"}}`, `{"License":null}`,
		`{"accessMode":"public"}`, `{"accessMode":7}`, `{"accessMode":""}`, `{}`, `[]`, `null`, ``,
		`{"result":true}`, `{"result":"yes"}`, `{"url":"https://idp.example.test/"}`, `{"url":"//evil"}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	srv := enterprisetest.NewServer(f)
	// One client for all inputs (a client per input would leak connections); no caching or breaker between inputs.
	c := newClient(f, srv, enterprise.Options{MaxBody: 4096, LicenseTTL: time.Nanosecond, BreakerFailures: 1 << 30})
	f.Fuzz(func(t *testing.T, body []byte) {
		srv.Override(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
		ctx := t.Context()
		check := func(err error) {
			if err != nil && !errors.Is(err, enterprise.ErrUnavailable) {
				t.Fatalf("error not wrapping ErrUnavailable: %v", err)
			}
		}
		_, err := c.LicenseStatus(ctx)
		check(err)
		_, err = c.WebAppAccessMode(ctx, appID)
		check(err)
		_, err = c.IsUserAllowed(ctx, userID, appID)
		check(err)
		u, err := c.SSOInitiate(ctx, "state")
		check(err)
		if err == nil && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			t.Fatalf("SSOInitiate returned %q", u)
		}
	})
}

func TestConcurrentLicenseCallersShareOneFetch(t *testing.T) {
	srv := enterprisetest.NewServer(t)
	srv.SetDelay(100 * time.Millisecond) // keeps the first fetch in flight while the others arrive
	c := newClient(t, srv, enterprise.Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if got, err := c.LicenseStatus(t.Context()); err != nil || got != enterprise.LicenseActive {
				errs <- fmt.Errorf("LicenseStatus = %q, %v", got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Callers that arrive after the fetch has landed read the cache; either way the service sees one call.
	if n := srv.RequestCount(); n != 1 {
		t.Fatalf("service saw %d /info calls for 20 concurrent callers, want 1", n)
	}
}
