package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/authgate/authgate/internal/pipeline"
	"github.com/authgate/authgate/internal/store/memory"
)

// demoServer serves the demo API alone (no proxy), over the seeded directory. Each pause between streamed chunks
// waits until the test closes release.
type demoServer struct {
	*httptest.Server
	release chan struct{}
}

func startDemoAPI(t *testing.T) *demoServer {
	t.Helper()
	store := memory.New()
	store.Seed(demoFixture())
	api := newDemoAPI(store, demoApps(), slog.New(slog.DiscardHandler))
	release := make(chan struct{})
	api.pause = func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release) // let paused runs finish
		}
	})
	return &demoServer{Server: srv, release: release}
}

// as are the identity headers extauthz would add for the demo account (or another) on an app route.
func as(accountID, tenantID, appID string) http.Header {
	h := http.Header{}
	h.Set(pipeline.HeaderSubjectType, "account")
	h.Set(pipeline.HeaderAccountID, accountID)
	h.Set(pipeline.HeaderSubjectIssuer, "dify:account")
	if tenantID != "" {
		h.Set(pipeline.HeaderTenantID, tenantID)
	}
	if appID != "" {
		h.Set(pipeline.HeaderAppID, appID)
	}
	return h
}

func (d *demoServer) send(t *testing.T, method, path string, h http.Header, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, d.URL+path, strings.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (d *demoServer) json(t *testing.T, method, path string, h http.Header, body string, wantStatus int) map[string]any {
	t.Helper()
	resp := d.send(t, method, path, h, body)
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: %d (%v) %v, want %d", method, path, resp.StatusCode, err, out, wantStatus)
	}
	return out
}

// nextEvent reads one server-sent event.
func nextEvent(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading an event: %v", err)
	}
	if blank, _ := r.ReadString('\n'); blank != "\n" {
		t.Fatalf("event not followed by a blank line: %q", blank)
	}
	data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
	var e sseEvent
	if !ok || json.Unmarshal([]byte(data), &e) != nil {
		t.Fatalf("not a data event: %q", line)
	}
	return e
}

func restOf(t *testing.T, r *bufio.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	for {
		if _, err := r.Peek(1); err == io.EOF {
			return out
		}
		out = append(out, nextEvent(t, r))
	}
}

// The demo API is an upstream that trusts authgate: who calls, in which workspace, on which app, comes from the
// x-authgate-* headers alone. A bearer token without them is nobody; the workspace_id query parameter is not read.
func TestDemoAPITakesIdentityOnlyFromTheProxyHeaders(t *testing.T) {
	t.Parallel()
	d := startDemoAPI(t)
	apps := "/openapi/v1/apps"

	bearerOnly := http.Header{"Authorization": {"Bearer dfoa_" + strings.Repeat("a", 43)}}
	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, "/openapi/v1/workspaces", ""},
		{http.MethodGet, apps + "?workspace_id=" + demoTenantID, ""},
		{http.MethodGet, apps + "/" + demoAppID + "/describe", ""},
		{http.MethodPost, apps + "/" + demoAppID + "/run", `{"inputs":{},"query":"hi"}`},
	} {
		if got := d.json(t, c.method, c.path, bearerOnly, c.body, http.StatusUnauthorized); got["code"] != "unauthorized" {
			t.Errorf("%s %s with only a bearer: %v", c.method, c.path, got)
		}
	}
	if got := d.json(t, http.MethodGet, "/openapi/v1/_version", nil, "", http.StatusOK); got["version"] != demoDifyVersion {
		t.Errorf("_version: %v", got)
	}

	// The workspace is the one extauthz verified, whatever the query says.
	got := d.json(t, http.MethodGet, apps+"?workspace_id="+demoTenantID, as(demoAccountID, otherTenantID, ""), "", http.StatusOK)
	if rows, _ := got["data"].([]any); len(rows) != 1 || rows[0].(map[string]any)["id"] != otherAppID {
		t.Errorf("apps listed for the verified workspace %s: %v", otherTenantID, got)
	}
	if got := d.json(t, http.MethodGet, apps+"?workspace_id="+demoTenantID, as(demoAccountID, "", ""), "",
		http.StatusForbidden); got["code"] != "forbidden" {
		t.Errorf("apps without a verified workspace: %v", got)
	}
	// The app is the one extauthz resolved, and only in the workspace it verified.
	if got := d.json(t, http.MethodGet, apps+"/"+demoAppID+"/describe", as(demoAccountID, demoTenantID, ""), "",
		http.StatusForbidden); got["code"] != "forbidden" {
		t.Errorf("describe without a resolved app: %v", got)
	}
	if got := d.json(t, http.MethodGet, apps+"/"+otherAppID+"/describe", as(demoAccountID, demoTenantID, otherAppID), "",
		http.StatusNotFound); got["code"] != "not_found" {
		t.Errorf("describe of an app outside the verified workspace: %v", got)
	}
	// The account is the one extauthz authenticated.
	ws := d.json(t, http.MethodGet, "/openapi/v1/workspaces", as(otherAccountID, "", ""), "", http.StatusOK)
	if list, _ := ws["workspaces"].([]any); len(list) != 1 || list[0].(map[string]any)["id"] != otherTenantID {
		t.Errorf("workspaces of %s: %v", otherAccountID, ws)
	}
	if got := d.json(t, http.MethodGet, "/openapi/v1/nothing-here", nil, "", http.StatusNotFound); got["code"] != "not_found" {
		t.Errorf("unknown path: %v", got)
	}
}

// A run stopped by its own subject ends early with message_end; a stop from anyone else is answered (as Dify answers
// every stop) but changes nothing.
func TestDemoRunStopsOnlyForItsSubject(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		stopper    string
		wantAnswer string
	}{
		{"by its subject", demoAccountID, "one "},
		{"by someone else", otherAccountID, "one two three"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startDemoAPI(t)
			path := "/openapi/v1/apps/" + demoAppID
			resp := d.send(t, http.MethodPost, path+"/run", as(demoAccountID, demoTenantID, demoAppID),
				`{"inputs":{},"query":"one two three"}`)
			defer resp.Body.Close()
			stream := bufio.NewReader(resp.Body)
			first := nextEvent(t, stream) // the run now waits before its second chunk
			if first.name() != "message" || first.str("answer") != "one " {
				t.Fatalf("first event %v", first)
			}
			stop := d.json(t, http.MethodPost, path+"/tasks/"+first.str("task_id")+"/stop",
				as(c.stopper, demoTenantID, demoAppID), "", http.StatusOK)
			if stop["result"] != "success" {
				t.Fatalf("stop: %v", stop)
			}
			close(d.release)
			answer := first.str("answer")
			rest := restOf(t, stream)
			for _, e := range rest {
				answer += e.str("answer")
			}
			if answer != c.wantAnswer || rest[len(rest)-1].name() != "message_end" {
				t.Errorf("answer %q, events %v; want %q ending with message_end", answer, names(rest), c.wantAnswer)
			}
		})
	}
}

// A workflow run goes on when its client leaves; its subject can follow it again, from its first event to the end.
func TestDemoWorkflowEventsFollowARunningRun(t *testing.T) {
	t.Parallel()
	d := startDemoAPI(t)
	path := "/openapi/v1/apps/" + demoWorkflowAppID
	caller := as(demoAccountID, demoTenantID, demoWorkflowAppID)
	resp := d.send(t, http.MethodPost, path+"/run", caller, `{"inputs":{"text":"alpha beta gamma"}}`)
	stream := bufio.NewReader(resp.Body)
	var seen []sseEvent
	for len(seen) == 0 || seen[len(seen)-1].name() != "text_chunk" { // the run now waits before its second chunk
		seen = append(seen, nextEvent(t, stream))
	}
	resp.Body.Close() // the client leaves
	runID := seen[0].str("workflow_run_id")

	if got := d.json(t, http.MethodGet, path+"/tasks/"+runID+"/events", as(otherAccountID, demoTenantID,
		demoWorkflowAppID), "", http.StatusNotFound); got["message"] != "Workflow run not found" {
		t.Errorf("another subject following the run: %v", got)
	}

	again := d.send(t, http.MethodGet, path+"/tasks/"+runID+"/events", caller, "")
	defer again.Body.Close()
	follow := bufio.NewReader(again.Body)
	var replayed []sseEvent
	for range seen {
		replayed = append(replayed, nextEvent(t, follow))
	}
	if !slices.Equal(names(replayed), names(seen)) {
		t.Fatalf("replayed %v, want %v", names(replayed), names(seen))
	}
	close(d.release)
	replayed = append(replayed, restOf(t, follow)...)
	final := replayed[len(replayed)-1]
	outputs, _ := final.data()["outputs"].(map[string]any)
	if final.name() != "workflow_finished" || outputs["text"] != "alpha beta gamma" {
		t.Errorf("the followed run ended with %v", final)
	}
	var text string
	for _, e := range replayed {
		if e.name() == "text_chunk" {
			text += e.data().str("text")
		}
	}
	if text != "alpha beta gamma" {
		t.Errorf("text chunks %q", text)
	}
}
