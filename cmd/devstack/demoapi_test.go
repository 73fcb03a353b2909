package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/testenv"
)

// devstack is what `make run` starts, on free ports, with its log captured.
type devstack struct {
	Addrs
	log *testenv.LogBuffer
}

func startDevstack(t *testing.T) *devstack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.LogBuffer{}
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	opts := Options{ShimAddr: "127.0.0.1:0", DeviceflowAddr: "127.0.0.1:0", ExtauthzAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", UpstreamAddr: "127.0.0.1:0", LogOutput: logs}
	go func() { done <- run(ctx, opts, io.Discard, func(a Addrs) { ready <- a }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("devstack shut down with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("devstack did not stop within 10 s")
		}
	})
	select {
	case a := <-ready:
		return &devstack{Addrs: a, log: logs}
	case err := <-done:
		t.Fatalf("devstack stopped before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("devstack not ready within 10 s")
	}
	return nil
}

// login runs the device flow as difyctl does, through the shim: device code, approval with the demo account's console
// session, then the poll (the first poll is never slowed down).
func (s *devstack) login(t *testing.T) string {
	t.Helper()
	var code struct {
		DeviceCode string `json:"device_code"`
		UserCode   string `json:"user_code"`
	}
	decode(t, post(t, http.DefaultClient, s.Shim+"/openapi/v1/oauth/device/code",
		url.Values{"client_id": {"difyctl"}, "device_label": {"difyctl on a laptop"}}), http.StatusOK, &code)
	exp := time.Now().Add(time.Hour).Unix()
	passport, err := signHS256(devSecretKey, map[string]any{"sub": "Console API Passport", "user_id": demoAccountID, "exp": exp})
	if err != nil {
		t.Fatal(err)
	}
	csrf, err := signHS256(devSecretKey, map[string]any{"sub": demoAccountID, "user_id": demoAccountID, "exp": exp})
	if err != nil {
		t.Fatal(err)
	}
	approve, _ := http.NewRequest(http.MethodPost, s.Shim+"/openapi/v1/oauth/device/approve",
		strings.NewReader(`{"user_code":"`+code.UserCode+`"}`))
	approve.Header.Set("Content-Type", "application/json")
	approve.Header.Set("X-CSRF-Token", csrf)
	approve.AddCookie(&http.Cookie{Name: "access_token", Value: passport})
	approve.AddCookie(&http.Cookie{Name: "csrf_token", Value: csrf})
	var approved struct{ Status string }
	decode(t, do(t, http.DefaultClient, approve), http.StatusOK, &approved)
	var tok struct {
		AccessToken        string `json:"access_token"`
		DefaultWorkspaceID string `json:"default_workspace_id"`
	}
	decode(t, post(t, http.DefaultClient, s.Shim+"/openapi/v1/oauth/device/token", url.Values{"client_id": {"difyctl"},
		"device_code": {code.DeviceCode}, "grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}}), http.StatusOK, &tok)
	if !strings.HasPrefix(tok.AccessToken, "dfoa_") || tok.DefaultWorkspaceID != demoTenantID {
		t.Fatalf("login: default workspace %q, token prefix wrong", tok.DefaultWorkspaceID)
	}
	return tok.AccessToken
}

// call sends one request shaped as difyctl sends it (bearer, JSON body, its Accept) through the shim.
func (s *devstack) call(t *testing.T, token, method, path string, body any) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.Shim+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", "difyctl/test")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.HasSuffix(path, "/run") || strings.Contains(path, "/events") {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp := do(t, http.DefaultClient, req)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, s.log.String())
	}
	return resp, b
}

// getJSON calls and decodes a 200 JSON answer.
func (s *devstack) getJSON(t *testing.T, token, path string, v any) {
	t.Helper()
	resp, body := s.call(t, token, http.MethodGet, path, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// sseEvent is one server-sent event of Dify's: the JSON object of its data line, which names the event.
type sseEvent map[string]any

func (e sseEvent) name() string { s, _ := e["event"].(string); return s }

func (e sseEvent) str(key string) string { s, _ := e[key].(string); return s }

func (e sseEvent) data() sseEvent { d, _ := e["data"].(map[string]any); return d }

func sseEvents(t *testing.T, resp *http.Response, body []byte) []sseEvent {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %d %q %s", resp.Request.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var out []sseEvent
	for block := range strings.SplitSeq(strings.TrimSpace(string(body)), "\n\n") {
		data, ok := strings.CutPrefix(block, "data: ")
		if !ok {
			t.Fatalf("not a data event: %q", block)
		}
		var e sseEvent
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		out = append(out, e)
	}
	return out
}

func names(events []sseEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.name())
	}
	return out
}

func apiErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Code   string `json:"code"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Code == "" || e.Status == 0 {
		t.Fatalf("not Dify's error body: %s", body)
	}
	return e.Code
}

type appList struct {
	Page    int  `json:"page"`
	Limit   int  `json:"limit"`
	Total   int  `json:"total"`
	HasMore bool `json:"has_more"`
	Data    []struct {
		ID            string `json:"id"`
		Name          string `json:"name"`
		Mode          string `json:"mode"`
		Tags          []struct{ Name string }
		UpdatedAt     string  `json:"updated_at"`
		CreatedByName *string `json:"created_by_name"`
		WorkspaceID   string  `json:"workspace_id"`
		WorkspaceName string  `json:"workspace_name"`
	} `json:"data"`
}

func (l appList) ids() []string {
	var out []string
	for _, a := range l.Data {
		out = append(out, a.ID)
	}
	return out
}

type describe struct {
	Info *struct {
		ID                string  `json:"id"`
		Name              string  `json:"name"`
		Mode              string  `json:"mode"`
		Author            *string `json:"author"`
		ServiceAPIEnabled bool    `json:"service_api_enabled"`
		Tags              []struct{ Name string }
	} `json:"info"`
	Parameters  map[string]any `json:"parameters"`
	InputSchema map[string]any `json:"input_schema"`
}

// TestDifyCLIRequestsThroughTheShim sends every request Dify's CLI sends for `get workspace`, `get app`,
// `get app <id>`, `describe app`, `run app` (streamed) and `version`, with the paths, queries, bodies and Accept it
// uses, through what `make run` serves, with a token from a device login; and checks each answer has the fields the CLI
// reads.
func TestDifyCLIRequestsThroughTheShim(t *testing.T) {
	t.Parallel()
	s := startDevstack(t)
	token := s.login(t)
	apps := "/openapi/v1/apps"

	t.Run("version", func(t *testing.T) {
		var v struct{ Version, Edition string }
		s.getJSON(t, "", "/openapi/v1/_version", &v) // difyctl probes it without a bearer
		if v.Version != demoDifyVersion || v.Edition != "SELF_HOSTED" {
			t.Errorf("_version = %+v", v)
		}
	})

	t.Run("get workspace", func(t *testing.T) {
		var got struct {
			Workspaces []struct {
				ID, Name, Role, Status string
				Current                bool
			}
		}
		s.getJSON(t, token, "/openapi/v1/workspaces", &got)
		if len(got.Workspaces) != 1 {
			t.Fatalf("workspaces %+v, want only the demo workspace", got.Workspaces)
		}
		if w := got.Workspaces[0]; w.ID != demoTenantID || w.Name != "Demo workspace" || w.Role != "owner" ||
			w.Status != "normal" || !w.Current {
			t.Errorf("workspace %+v", w)
		}
	})

	t.Run("get app", func(t *testing.T) {
		var all appList
		s.getJSON(t, token, apps+"?workspace_id="+demoTenantID+"&page=1&limit=20", &all)
		if all.Page != 1 || all.Limit != 20 || all.Total != 2 || all.HasMore ||
			!slices.Equal(all.ids(), []string{demoAppID, demoWorkflowAppID}) {
			t.Fatalf("apps %+v", all)
		}
		for _, a := range all.Data {
			if a.WorkspaceID != demoTenantID || a.WorkspaceName != "Demo workspace" || a.CreatedByName == nil ||
				*a.CreatedByName != "Demo User" || len(a.Tags) != 1 || a.Tags[0].Name != "demo" || a.UpdatedAt == "" {
				t.Errorf("app row %+v", a)
			}
		}
		if all.Data[0].Mode != "chat" || all.Data[1].Mode != "workflow" {
			t.Errorf("modes %q, %q", all.Data[0].Mode, all.Data[1].Mode)
		}
		for _, c := range []struct {
			query   string
			want    []string
			hasMore bool
		}{
			{"&mode=chat", []string{demoAppID}, false},
			{"&mode=workflow", []string{demoWorkflowAppID}, false},
			{"&mode=completion", nil, false},
			{"&name=WORK", []string{demoWorkflowAppID}, false},
			{"&name=" + demoAppID, []string{demoAppID}, false},
			{"&name=" + otherAppID, nil, false}, // an app id of another workspace finds nothing here
			{"&tag=demo", []string{demoAppID, demoWorkflowAppID}, false},
			{"&tag=production", nil, false},
			{"&limit=1", []string{demoAppID}, true},
			{"&page=2&limit=1", []string{demoWorkflowAppID}, false},
			{"&page=3&limit=1", nil, false},
		} {
			var got appList
			s.getJSON(t, token, apps+"?workspace_id="+demoTenantID+c.query, &got)
			if !slices.Equal(got.ids(), c.want) || got.HasMore != c.hasMore {
				t.Errorf("%s: %v has_more %v, want %v %v", c.query, got.ids(), got.HasMore, c.want, c.hasMore)
			}
		}
		for _, bad := range []string{"&mode=spreadsheet", "&page=0", "&limit=201", "&limit=x"} {
			resp, body := s.call(t, token, http.MethodGet, apps+"?workspace_id="+demoTenantID+bad, nil)
			if resp.StatusCode != http.StatusUnprocessableEntity || apiErrorCode(t, body) != "invalid_param" {
				t.Errorf("%s: %d %s, want 422 invalid_param", bad, resp.StatusCode, body)
			}
		}
	})

	t.Run("get app <id>", func(t *testing.T) {
		var got describe
		s.getJSON(t, token, apps+"/"+demoAppID+"/describe?fields=info", &got)
		if got.Info == nil || got.Info.ID != demoAppID || got.Info.Mode != "chat" || got.Info.Name != "Demo chat" ||
			!got.Info.ServiceAPIEnabled || got.Info.Author == nil || *got.Info.Author != "Demo User" {
			t.Errorf("info %+v", got.Info)
		}
		if got.Parameters != nil || got.InputSchema != nil {
			t.Errorf("fields=info answered more: %+v", got)
		}
	})

	t.Run("describe app", func(t *testing.T) {
		for _, c := range []struct {
			app, mode string
			required  []any // of the run body
			inputs    []any // of inputs
		}{
			{demoAppID, "chat", []any{"query", "inputs"}, []any{}},
			{demoWorkflowAppID, "workflow", []any{"inputs"}, []any{"text"}},
		} {
			var got describe
			s.getJSON(t, token, apps+"/"+c.app+"/describe?fields=info%2Cparameters%2Cinput_schema", &got)
			if got.Info == nil || got.Info.Mode != c.mode || got.Parameters == nil || got.InputSchema == nil {
				t.Fatalf("%s: %+v", c.mode, got)
			}
			if _, ok := got.Parameters["user_input_form"].([]any); !ok {
				t.Errorf("%s: parameters without user_input_form: %v", c.mode, got.Parameters)
			}
			req, _ := got.InputSchema["required"].([]any)
			props, _ := got.InputSchema["properties"].(map[string]any)
			inputs, _ := props["inputs"].(map[string]any)
			inReq, _ := inputs["required"].([]any)
			if !slices.Equal(req, c.required) || !slices.Equal(inReq, c.inputs) {
				t.Errorf("%s: input_schema %v", c.mode, got.InputSchema)
			}
		}
		var all describe
		s.getJSON(t, token, apps+"/"+demoAppID+"/describe", &all) // no fields: every block
		if all.Info == nil || all.Parameters == nil || all.InputSchema == nil {
			t.Errorf("describe without fields: %+v", all)
		}
		resp, body := s.call(t, token, http.MethodGet, apps+"/"+demoAppID+"/describe?fields=info,secrets", nil)
		if resp.StatusCode != http.StatusUnprocessableEntity || apiErrorCode(t, body) != "invalid_param" {
			t.Errorf("unknown field: %d %s", resp.StatusCode, body)
		}
	})

	var chatTask string
	t.Run("run app, streamed", func(t *testing.T) {
		const message = "hello from the dev stack, through the proxy"
		resp, body := s.call(t, token, http.MethodPost, apps+"/"+demoAppID+"/run",
			map[string]any{"inputs": map[string]any{}, "query": message})
		events := sseEvents(t, resp, body)
		if len(events) < 3 || events[len(events)-1].name() != "message_end" {
			t.Fatalf("events %v, want message events then message_end", names(events))
		}
		var answer strings.Builder
		chatTask = events[0].str("task_id")
		conversation := events[0].str("conversation_id")
		for _, e := range events {
			if e.str("task_id") != chatTask || e.str("conversation_id") != conversation || e.str("message_id") == "" {
				t.Errorf("event %v does not carry the run's task, conversation and message", e)
			}
			if e.name() == "message" {
				answer.WriteString(e.str("answer"))
			}
		}
		if answer.String() != message || !ids.Valid(chatTask) || !ids.Valid(conversation) {
			t.Errorf("answer %q (task %q, conversation %q), want the query echoed", answer.String(), chatTask, conversation)
		}
		// `--conversation <id>` continues it.
		resp, body = s.call(t, token, http.MethodPost, apps+"/"+demoAppID+"/run",
			map[string]any{"inputs": map[string]any{}, "query": "again", "conversation_id": conversation})
		if again := sseEvents(t, resp, body); again[0].str("conversation_id") != conversation {
			t.Errorf("continued run in conversation %q, want %q", again[0].str("conversation_id"), conversation)
		}
	})

	t.Run("stop a task", func(t *testing.T) {
		resp, body := s.call(t, token, http.MethodPost, apps+"/"+demoAppID+"/tasks/"+chatTask+"/stop", nil)
		var got struct{ Result string }
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Result != "success" {
			t.Errorf("stop: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("run a workflow and follow its events again", func(t *testing.T) {
		resp, body := s.call(t, token, http.MethodPost, apps+"/"+demoWorkflowAppID+"/run",
			map[string]any{"inputs": map[string]any{"text": "hello, workflow"}})
		events := sseEvents(t, resp, body)
		if events[0].name() != "workflow_started" || events[len(events)-1].name() != "workflow_finished" {
			t.Fatalf("events %v", names(events))
		}
		final := events[len(events)-1].data()
		outputs, _ := final["outputs"].(map[string]any)
		runID := events[0].str("workflow_run_id")
		if final.str("status") != "succeeded" || outputs["text"] != "hello, workflow" || !ids.Valid(runID) {
			t.Fatalf("workflow_finished %v", final)
		}

		// The run is finished: its events answer with workflow_finished, or every event with a state snapshot.
		resp, body = s.call(t, token, http.MethodGet, apps+"/"+demoWorkflowAppID+"/tasks/"+runID+
			"/events?include_state_snapshot=false&continue_on_pause=false", nil)
		if again := sseEvents(t, resp, body); !slices.Equal(names(again), []string{"workflow_finished"}) {
			t.Errorf("events of a finished run: %v", names(again))
		}
		resp, body = s.call(t, token, http.MethodGet, apps+"/"+demoWorkflowAppID+"/tasks/"+runID+
			"/events?include_state_snapshot=true", nil)
		if again := sseEvents(t, resp, body); !slices.Equal(names(again), names(events)) {
			t.Errorf("snapshot %v, want %v", names(again), names(events))
		}

		for _, c := range []struct {
			path       string
			status     int
			code, text string
		}{
			{apps + "/" + demoAppID + "/tasks/" + chatTask + "/events", 422, "invalid_param", "mode_not_supported_for_event_reconnect"},
			{apps + "/" + demoWorkflowAppID + "/tasks/" + ids.New() + "/events", 404, "not_found", "Workflow run not found"},
		} {
			resp, body := s.call(t, token, http.MethodGet, c.path, nil)
			if resp.StatusCode != c.status || apiErrorCode(t, body) != c.code || !strings.Contains(string(body), c.text) {
				t.Errorf("GET %s: %d %s", c.path, resp.StatusCode, body)
			}
		}
	})

	t.Run("run refuses what Dify refuses", func(t *testing.T) {
		for _, c := range []struct {
			app    string
			body   any
			status int
			text   string
		}{
			{demoAppID, map[string]any{"inputs": map[string]any{}}, 422, "query_required_for_chat"},
			{demoAppID, map[string]any{"inputs": map[string]any{}, "query": "  "}, 422, "query_required_for_chat"},
			{demoAppID, map[string]any{"query": "hi"}, 422, "inputs"},
			{demoAppID, map[string]any{"inputs": map[string]any{}, "query": "hi", "conversation_id": "c1"}, 422, "UUID"},
			{demoAppID, "not an object", 400, "JSON"},
			{demoWorkflowAppID, map[string]any{"inputs": map[string]any{"text": "x"}, "query": "hi"}, 422, "query_not_supported_for_workflow"},
			{demoWorkflowAppID, map[string]any{"inputs": map[string]any{}}, 400, "text is required"},
			{demoWorkflowAppID, map[string]any{"inputs": map[string]any{"text": 7}}, 400, "must be a string"},
			{demoWorkflowAppID, map[string]any{"inputs": map[string]any{"text": strings.Repeat("x", 257)}}, 400, "less than 256"},
		} {
			resp, body := s.call(t, token, http.MethodPost, apps+"/"+c.app+"/run", c.body)
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.text) {
				t.Errorf("run %s with %v: %d %s, want %d mentioning %q", c.app, c.body, resp.StatusCode, body, c.status, c.text)
			}
			apiErrorCode(t, body)
		}
	})
}

// The membership check is extauthz's: a workspace the account is not a member of, and that workspace's app, are refused
// by extauthz with 403 before the demo upstream sees the request.
func TestAnotherWorkspaceIsRefusedAtTheProxy(t *testing.T) {
	t.Parallel()
	s := startDevstack(t)
	token := s.login(t)
	upstreamLines := func() int { return strings.Count(s.log.String(), `"msg":"demo api"`) }

	// A request the upstream answers, to see its log line.
	var ws struct{ Workspaces []any }
	s.getJSON(t, token, "/openapi/v1/workspaces", &ws)
	testenv.Eventually(t, 5*time.Second, "the demo upstream logs the request it answered", func() bool {
		return upstreamLines() == 1
	})

	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/openapi/v1/apps?workspace_id=" + otherTenantID + "&page=1&limit=20", nil},
		{http.MethodGet, "/openapi/v1/workspaces/" + otherTenantID, nil},
		{http.MethodGet, "/openapi/v1/apps/" + otherAppID + "/describe?fields=info", nil},
		{http.MethodPost, "/openapi/v1/apps/" + otherAppID + "/run", map[string]any{"inputs": map[string]any{}, "query": "hi"}},
		{http.MethodPost, "/openapi/v1/apps/" + otherAppID + "/tasks/" + ids.New() + "/stop", nil},
		{http.MethodGet, "/openapi/v1/apps/" + otherAppID + "/tasks/" + ids.New() + "/events", nil},
	} {
		resp, body := s.call(t, token, c.method, c.path, c.body)
		// extauthz's deny body ({"error": ...}), never Dify's ({"code": ...}) from the upstream.
		if resp.StatusCode != http.StatusForbidden || errorCode(string(body)) != "workspace_membership_revoked" {
			t.Errorf("%s %s: %d %s, want extauthz's 403 workspace_membership_revoked", c.method, c.path, resp.StatusCode, body)
		}
	}

	s.getJSON(t, token, "/openapi/v1/workspaces", &ws)
	testenv.Eventually(t, 5*time.Second, "the demo upstream logs the second request it answered", func() bool {
		return upstreamLines() >= 2
	})
	if n := upstreamLines(); n != 2 {
		t.Errorf("the demo upstream saw %d requests, want only the 2 allowed ones:\n%s", n, s.log.String())
	}
}
