package deviceflow

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestBodyLimitsAndMalformedBodies(t *testing.T) {
	e := newFlowEnv(t, nil)
	big := `{"client_id":"difyctl","device_label":"` + strings.Repeat("a", maxBody) + `"}`
	wantErr(t, e.do(http.MethodPost, apiPrefix+"/oauth/device/code", "application/json", strings.NewReader(big)),
		http.StatusRequestEntityTooLarge, "request_too_large")
	// Without a Content-Length (chunked), the limit still holds.
	wantErr(t, e.do(http.MethodPost, apiPrefix+"/oauth/device/token", "application/x-www-form-urlencoded",
		io.MultiReader(strings.NewReader("device_code="), strings.NewReader(strings.Repeat("b", maxBody)))),
		http.StatusRequestEntityTooLarge, "request_too_large")

	for _, c := range []struct{ ct, body string }{
		{"application/json", `{"client_id":`},
		{"application/json", `["client_id"]`},
		{"application/json", `{"client_id":"difyctl"} trailing`},
		{"application/json", `null`},
		{"application/x-www-form-urlencoded", "client_id=%zz"},
		{"application/x-www-form-urlencoded", "client_id=difyctl&client_id=other-cli"},
		{"application/json; charset=\"", `{}`},
		{"application/x-www-form-urlencoded", "client_id=\xff\xfe"},
		// A repeated JSON member is refused like a repeated form parameter, whichever value a parser would keep.
		{"application/json", `{"client_id":"evil","client_id":"difyctl"}`},
		{"application/json", `{"client_id":"difyctl","client_id":"difyctl"}`},
		{"application/json", `{"client_id":null,"client_id":"difyctl"}`},
		{"application/json", `{"client_id":"difyctl","client\u005fid":"evil"}`},
		{"application/json", `{"client_id":"difyctl","device_label":"a","device_label":"b"}`},
	} {
		r := e.do(http.MethodPost, apiPrefix+"/oauth/device/code", c.ct, strings.NewReader(c.body))
		wantErr(t, r, http.StatusBadRequest, "invalid_request")
	}
	r := e.do(http.MethodPost, apiPrefix+"/oauth/device/code", "text/plain", strings.NewReader("client_id=difyctl"))
	if r.Status != http.StatusUnsupportedMediaType || r.str("error") != "invalid_request" {
		t.Fatalf("text/plain: %d %s", r.Status, r.Raw)
	}
	// A body within the limit is fine: 64 KiB of ignored parameters.
	pad := "client_id=difyctl&pad=" + strings.Repeat("p", maxBody-len("client_id=difyctl&pad="))
	if r := e.do(http.MethodPost, apiPrefix+"/oauth/device/code", "application/x-www-form-urlencoded", strings.NewReader(pad)); r.Status != http.StatusOK {
		t.Fatalf("64 KiB body: %d %s", r.Status, r.Raw)
	}
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	e := newFlowEnv(t, nil)
	dc, _ := e.issue("")
	for _, r := range []flowResp{
		e.get("/me"),
		e.pollJSON(dc),
		e.do(http.MethodGet, "/nowhere", "", nil),
		e.do(http.MethodGet, "/.well-known/oauth-authorization-server/openapi/v1", "", nil),
		e.postJSON("/oauth/device/code", map[string]string{"client_id": "difyctl"}),
		e.do(http.MethodPost, apiPrefix+"/oauth/device/code", "application/json", strings.NewReader("{")),
	} {
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer"} {
			if r.Header.Get(k) != v {
				t.Fatalf("%s = %q on a %d response", k, r.Header.Get(k), r.Status)
			}
		}
		if !strings.Contains(r.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("CSP %q", r.Header.Get("Content-Security-Policy"))
		}
	}
	if r := e.pollJSON(dc); r.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("token endpoint error without Cache-Control: no-store")
	}
	wantErr(t, e.do(http.MethodGet, "/nowhere", "", nil), http.StatusNotFound, "not_found")
	r := e.do(http.MethodGet, apiPrefix+"/oauth/device/token", "", nil)
	wantErr(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	if r.Header.Get("Allow") == "" || r.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("405 headers %v", r.Header)
	}
}

func decodeForFuzz(contentType string, body []byte) (params, *apiError) {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	return decodeBody(httptest.NewRecorder(), req)
}

func FuzzDecodeJSONBody(f *testing.F) {
	for _, s := range []string{`{"client_id":"difyctl","device_code":"dc_x"}`, `{"a":1,"b":[1,2],"c":null}`, `{`, `[]`,
		`{"client_id":"\u0000"}`, `{"x":"y"} {}`, "", `{"client_id":"a","client_id":"b"}`,
		`{"client_id":"evil","client_id":"difyctl"}`, `{"client\u005fid":"evil","client_id":"difyctl"}`,
		`{"client_id":null,"client_id":"difyctl"}`, `{"a":{"b":1,"b":2},"client_id":"difyctl"}`, `{"client_id":"x",}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, apiErr := decodeForFuzz("application/json", body)
		if apiErr != nil {
			if apiErr.Status != http.StatusBadRequest && apiErr.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d", apiErr.Status)
			}
			return
		}
		for _, name := range []string{"client_id", "device_code", "grant_type", "user_code"} {
			v, err := p.str(name)
			if err != nil && err.Status != http.StatusBadRequest {
				t.Fatalf("param error status %d", err.Status)
			}
			if err == nil && !strings.Contains(string(body), "\""+name) && v != "" && !strings.Contains(string(body), `\u`) {
				t.Fatalf("%s = %q out of nowhere", name, v)
			}
			// A value read here is the one any JSON parser reads: the member is not repeated, so keeping the first or the
			// last member of a name makes no difference.
			var m map[string]any
			if err == nil && v != "" && (json.Unmarshal(body, &m) != nil || m[name] != v) {
				t.Fatalf("%s = %q, but a map decoding reads %v", name, v, m[name])
			}
		}
	})
}

func FuzzDecodeFormBody(f *testing.F) {
	for _, s := range []string{"client_id=difyctl&device_code=dc_x&grant_type=urn%3Aietf", "a=%zz", "=&&=", "client_id=a&client_id=b",
		"device_label=%E2%80%AE", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, apiErr := decodeForFuzz("application/x-www-form-urlencoded", body)
		if apiErr != nil {
			if apiErr.Status != http.StatusBadRequest && apiErr.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d", apiErr.Status)
			}
			return
		}
		if !p.form {
			t.Fatal("a form body decoded as JSON")
		}
		label, err := p.str("device_label")
		if err == nil && label != "" {
			_ = validLabel(label)
		}
	})
}

func FuzzNormalizeUserCode(f *testing.F) {
	for _, s := range []string{"BCDF-GHJK", "bcdf ghjk", "bcdfghjk", "B-C-D-F-G-H-J-K", "AEIO-U123", "BCDF-GHJKL", "", "ß", "ＢＣＤＦ-ＧＨＪＫ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := normalizeUserCode(in)
		if !ok {
			if out != "" {
				t.Fatalf("rejected %q but returned %q", in, out)
			}
			return
		}
		if len(out) != 9 || out[4] != '-' {
			t.Fatalf("%q -> %q: not XXXX-XXXX", in, out)
		}
		for i, r := range out {
			if i != 4 && !strings.ContainsRune(userCodeAlphabet, r) {
				t.Fatalf("%q -> %q: %q outside the alphabet", in, out, r)
			}
		}
		if again, ok := normalizeUserCode(out); !ok || again != out {
			t.Fatalf("normalisation is not idempotent: %q -> %q -> %q", in, out, again)
		}
		if strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(in)) != strings.ReplaceAll(out, "-", "") {
			t.Fatalf("%q -> %q changed more than case, dashes and spaces", in, out)
		}
	})
}

func TestUserCodesAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		c, err := newUserCode()
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := normalizeUserCode(c); !ok || n != c {
			t.Fatalf("generated %q does not normalise to itself", c)
		}
		seen[c] = true
	}
	if len(seen) < 1990 {
		t.Fatalf("only %d distinct codes in 2000", len(seen))
	}
}

// A body with a repeated member is refused with 400 wherever it is read, and changes nothing: the approval is not claimed,
// the code not resolved, no code issued.
func TestDuplicateJSONMembersAreRefusedAndChangeNothing(t *testing.T) {
	e := newFlowEnv(t, nil)
	raw := func(path, body string, opts ...reqOpt) flowResp {
		return e.do(http.MethodPost, apiPrefix+path, "application/json", strings.NewReader(body), opts...)
	}
	keysBefore := e.rdb.DBSize(t.Context()).Val()
	wantErr(t, raw("/oauth/device/code", `{"client_id":"evil","client_id":"difyctl"}`), http.StatusBadRequest, "invalid_request")
	if n := e.rdb.Keys(t.Context(), "device_code:*").Val(); len(n) != 0 || e.rdb.DBSize(t.Context()).Val() < keysBefore {
		t.Fatalf("a refused request issued a code: %v", n)
	}

	dc, uc := e.issue("")
	c := e.consoleFor(flowAnn.ID)
	for _, body := range []string{
		`{"user_code":"BBBB-BBBB","user_code":"` + uc + `"}`,
		`{"user_code":"` + uc + `","user_code":"` + uc + `"}`,
	} {
		wantErr(t, raw("/oauth/device/approve", body, c.opts()...), http.StatusBadRequest, "invalid_request")
		wantErr(t, raw("/oauth/device/deny", body, c.opts()...), http.StatusBadRequest, "invalid_request")
	}
	if a, err := e.srv.State().LookupPending(t.Context(), uc, time.Now()); err != nil || a.Status != StatusPending {
		t.Fatalf("a refused approval changed the code: %+v %v", a, err)
	}
	if r := e.approve(uc, c); r.Status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	for _, body := range []string{
		`{"client_id":"difyctl","device_code":"dc_other","device_code":"` + dc + `"}`,
		`{"client_id":"evil","client_id":"difyctl","device_code":"` + dc + `"}`,
		`{"client_id":"difyctl","device_code":"` + dc + `","grant_type":"x","grant_type":"` + deviceCodeGrant + `"}`,
	} {
		wantErr(t, raw("/oauth/device/token", body), http.StatusBadRequest, "invalid_request")
	}
	if st := e.rdb.HGetAll(t.Context(), deviceKey(hashDeviceCode(dc))).Val(); st[fStatus] != "approved" || st[fClaimID] != "" {
		t.Fatalf("a refused poll touched the approval: %v", st)
	}
	if r := e.pollJSON(dc); r.Status != http.StatusOK || !accountTokenRE.MatchString(r.str("access_token")) {
		t.Fatalf("the well-formed poll: %d %s", r.Status, r.Raw)
	}
}
