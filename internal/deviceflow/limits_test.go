package deviceflow

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// wantRateLimited asserts 429 rate_limited with a Retry-After inside the window (the window began during the test).
func wantRateLimited(t *testing.T, r flowResp, window time.Duration, testStart time.Time) {
	t.Helper()
	wantErr(t, r, http.StatusTooManyRequests, "rate_limited")
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	low := int((window - time.Since(testStart)).Seconds()) - 1
	if secs < 1 || secs > int(window.Seconds()) || secs < low {
		t.Fatalf("Retry-After %d s, want within [%d, %d]", secs, low, int(window.Seconds()))
	}
}

func fromIP(ip string) reqOpt { return withHeader("X-Forwarded-For", ip) }

func TestDeviceCodeLimitPerIP(t *testing.T) {
	e := newFlowEnv(t, func(c *Config) { c.TrustedProxyHops = 1 })
	start := time.Now()
	for range limitDeviceCode.n {
		e.issue("", fromIP("203.0.113.7"))
	}
	wantRateLimited(t, e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl"}, fromIP("203.0.113.7")),
		time.Hour, start)
	// Another address has its own budget.
	e.issue("", fromIP("203.0.113.8"))
	// IPv6 addresses share the budget of their /64.
	for range limitDeviceCode.n {
		e.issue("", fromIP("2001:db8:1:2::1"))
	}
	wantRateLimited(t, e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl"},
		fromIP("2001:db8:1:2:ffff::9")), time.Hour, start)
}

func TestSpoofedForwardedForIsIgnoredWithoutTrustedHops(t *testing.T) {
	e := newFlowEnv(t, nil) // TRUSTED_PROXY_HOPS=0: the peer address is the client
	start := time.Now()
	for i := range limitDeviceCode.n {
		e.issue("", fromIP("198.51.100."+strconv.Itoa(i)))
	}
	wantRateLimited(t, e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl"}, fromIP("198.51.100.250")),
		time.Hour, start)

	// With one trusted hop only the rightmost entry (the one the proxy appended) counts, not what the client wrote.
	e2 := newFlowEnv(t, func(c *Config) { c.TrustedProxyHops = 1 })
	for i := range limitDeviceCode.n {
		e2.issue("", fromIP("10.9.9."+strconv.Itoa(i)+", 203.0.113.50"))
	}
	wantRateLimited(t, e2.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl"},
		fromIP("10.0.0.1, 203.0.113.50")), time.Hour, start)
	dc, uc := e2.issue("", fromIP("10.0.0.1, 203.0.113.51"))
	a, err := e2.srv.State().Lookup(t.Context(), uc, time.Now())
	if err != nil || a.CreatorIP != "203.0.113.51" {
		t.Fatalf("creator ip %q (%v)", a.CreatorIP, err)
	}
	// A client-sent X-Forwarded-For line followed by the one the proxy appended: the proxy's entry is the client.
	_, uc2 := e2.issue("", func(r *http.Request) {
		r.Header.Add("X-Forwarded-For", "10.6.6.6")
		r.Header.Add("X-Forwarded-For", "203.0.113.52")
	})
	if a, err := e2.srv.State().Lookup(t.Context(), uc2, time.Now()); err != nil || a.CreatorIP != "203.0.113.52" {
		t.Fatalf("creator ip with two X-Forwarded-For lines %q (%v), want the proxy-appended entry", a.CreatorIP, err)
	}
	// A poll from elsewhere is audited.
	e2.pollJSON(dc, fromIP("203.0.113.99"))
	if e2.logs.count(auditCrossIPPoll) != 1 {
		t.Fatalf("cross-IP poll audited %d times", e2.logs.count(auditCrossIPPoll))
	}
	e2.pollJSON(dc, fromIP("203.0.113.51"))
	if e2.logs.count(auditCrossIPPoll) != 1 {
		t.Fatal("a poll from the creator's address was audited as cross-IP")
	}
}

func TestLookupLimits(t *testing.T) {
	e := newFlowEnv(t, func(c *Config) { c.TrustedProxyHops = 1 })
	start := time.Now()
	_, uc := e.issue("")
	// Failed lookups: 20 per 10 minutes per address, then refused even for a valid code.
	for range limitFailedLookup.n {
		if r := e.get("/oauth/device/lookup?user_code=BBBB-BBBB", fromIP("203.0.113.1")); r.Body["valid"] != false {
			t.Fatalf("unknown code: %s", r.Raw)
		}
	}
	wantRateLimited(t, e.get("/oauth/device/lookup?user_code="+uc, fromIP("203.0.113.1")), 10*time.Minute, start)

	// All lookups: 60 per 5 minutes per address.
	for range limitLookup.n {
		if r := e.get("/oauth/device/lookup?user_code="+uc, fromIP("203.0.113.2")); r.Body["valid"] != true {
			t.Fatalf("valid code: %s", r.Raw)
		}
	}
	wantRateLimited(t, e.get("/oauth/device/lookup?user_code="+uc, fromIP("203.0.113.2")), 5*time.Minute, start)
}

func TestApproveLimitPerAccount(t *testing.T) {
	e := newFlowEnv(t, func(c *Config) { c.ApprovePerHour = 3 })
	start := time.Now()
	c := e.consoleFor(flowAnn.ID)
	for i := range 3 {
		_, uc := e.issue("")
		path := "/oauth/device/approve"
		if i%2 == 1 {
			path = "/oauth/device/deny"
		}
		if r := e.postJSON(path, map[string]string{"user_code": uc}, c.opts()...); r.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.Status, r.Raw)
		}
	}
	_, uc := e.issue("")
	wantRateLimited(t, e.approve(uc, c), time.Hour, start)
	// Another account is not affected.
	if r := e.approve(uc, e.consoleFor(flowBob.ID)); r.Status != http.StatusOK {
		t.Fatalf("bob: %d %s", r.Status, r.Raw)
	}
}

func TestMeLimitPerToken(t *testing.T) {
	e := newFlowEnv(t, nil)
	start := time.Now()
	tok := e.login(flowAnn, "laptop").str("token")
	other := e.login(flowAnn, "desktop").str("token")
	for range limitMe.n / 2 {
		if r := e.get("/me", withBearer(tok)); r.Status != http.StatusOK {
			t.Fatalf("/me: %d %s", r.Status, r.Raw)
		}
		if r := e.get("/account", withBearer(tok)); r.Status != http.StatusOK {
			t.Fatalf("/account: %d %s", r.Status, r.Raw)
		}
	}
	wantRateLimited(t, e.get("/me", withBearer(tok)), time.Minute, start)
	if r := e.get("/me", withBearer(other)); r.Status != http.StatusOK {
		t.Fatalf("another token was limited: %d", r.Status)
	}
}

// wantRetryAfterMinutes asserts a 429 whose Retry-After lets the caller in again within the failed-lookup window.
func wantRetryAfterMinutes(t *testing.T, r flowResp) {
	t.Helper()
	wantErr(t, r, http.StatusTooManyRequests, "rate_limited")
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > int(limitFailedLookup.window/time.Second) {
		t.Fatalf("Retry-After %q, want at most %v", r.Header.Get("Retry-After"), limitFailedLookup.window)
	}
}

// ageFailedLookups moves an address's counted failures window back in time, as if that much time had passed: the limiter
// scores entries with Redis's own clock, which a test cannot advance.
func ageFailedLookups(t *testing.T, e *flowEnv, bucket string, by time.Duration) {
	t.Helper()
	key := limitFailedLookup.prefix + bucket
	entries, err := e.rdb.ZRangeWithScores(t.Context(), key, 0, -1).Result()
	if err != nil || len(entries) == 0 {
		t.Fatalf("no failed lookups counted for %s (%v)", bucket, err)
	}
	for _, z := range entries {
		z.Score -= by.Seconds()
		if err := e.rdb.ZAdd(t.Context(), key, z).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMistypedCodesLockOutForMinutesNotAnHour: a person who mistyped 20 codes is refused, with a Retry-After of minutes,
// and enters the right code once the window has moved on; their colleagues behind other addresses are never affected.
func TestMistypedCodesLockOutForMinutesNotAnHour(t *testing.T) {
	e := newFlowEnv(t, func(c *Config) { c.TrustedProxyHops = 1 })
	_, uc := e.issue("")
	office := fromIP("198.51.100.7")
	for i := range limitFailedLookup.n {
		if r := e.get("/oauth/device/lookup?user_code=BBBB-BBB"+string(userCodeAlphabet[i]), office); r.Body["valid"] != false {
			t.Fatalf("mistyped code %d: %s", i, r.Raw)
		}
	}
	wantRetryAfterMinutes(t, e.get("/oauth/device/lookup?user_code="+uc, office))
	if r := e.get("/oauth/device/lookup?user_code="+uc, fromIP("198.51.100.8")); r.Body["valid"] != true {
		t.Fatalf("another address was refused: %s", r.Raw)
	}
	ageFailedLookups(t, e, "198.51.100.7", limitFailedLookup.window+time.Second)
	if r := e.get("/oauth/device/lookup?user_code="+uc, office); r.Status != http.StatusOK || r.Body["valid"] != true {
		t.Fatalf("the right code after the window: %d %s", r.Status, r.Raw)
	}
}

// TestEveryUnknownCodeAnswerSpendsOneBudget: unknown codes typed into lookup, /device/details, approve, deny and the page's
// sso-initiate are charged to one failed-lookup budget per address (an IPv6 /64); once it is spent every one of them
// refuses even a valid code, so spreading guesses over endpoints gains nothing.
func TestEveryUnknownCodeAnswerSpendsOneBudget(t *testing.T) {
	e := newFaultEnv(t, false)
	_, uc := e.issue("laptop")
	c := e.consoleFor(flowAnn.ID)
	from := fromIP("2001:db8:7:7::1")
	page := e.openPage(from)
	guessers := []func(code string) flowResp{
		func(code string) flowResp { return e.get("/oauth/device/lookup?user_code="+code, from) },
		func(code string) flowResp {
			return e.do(http.MethodGet, "/device/details?user_code="+code, "", nil, withCookies(c.cookies...), from)
		},
		func(code string) flowResp {
			return e.postJSON("/oauth/device/approve", map[string]string{"user_code": code}, append(c.opts(), from)...)
		},
		func(code string) flowResp {
			return e.postJSON("/oauth/device/deny", map[string]string{"user_code": code}, append(c.opts(), from)...)
		},
		func(code string) flowResp { return e.ssoInitiate(code, page, from) },
	}
	for i := range limitFailedLookup.n {
		r := guessers[i%len(guessers)]("BBBB-BBB" + string(userCodeAlphabet[i]))
		if r.Status != http.StatusNotFound && r.Body["valid"] != false {
			t.Fatalf("guess %d: %d %s", i, r.Status, r.Raw)
		}
	}
	for i, guess := range guessers {
		wantRetryAfterMinutes(t, guess(uc))
		if i == 0 {
			// Another address in the same /64 shares the budget.
			wantRetryAfterMinutes(t, e.get("/oauth/device/lookup?user_code="+uc, fromIP("2001:db8:7:7:ffff::2")))
		}
	}
	if a, err := e.srv.State().LookupPending(t.Context(), uc, time.Now()); err != nil || a.Status != StatusPending {
		t.Fatalf("a refused request changed the code: %+v %v", a, err)
	}
	if r := e.approve(uc, c); r.Status != http.StatusOK {
		t.Fatalf("approve from another address: %d %s", r.Status, r.Raw)
	}
}
