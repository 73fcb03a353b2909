package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/pipeline"
)

// demoDifyVersion is the Dify release whose /openapi/v1 shapes the demo API follows; `difyctl version` compares it with
// the range of servers it supports.
const demoDifyVersion = "1.14.2"

// Dify's app modes (its AppMode enum).
const (
	appModeChat         = "chat"
	appModeAgentChat    = "agent-chat"
	appModeAdvancedChat = "advanced-chat"
	appModeCompletion   = "completion"
	appModeWorkflow     = "workflow"
)

var appModes = []string{appModeAdvancedChat, "agent", appModeAgentChat, "channel", appModeChat, appModeCompletion,
	"rag-pipeline", appModeWorkflow}

func isChatMode(mode string) bool {
	return mode == appModeChat || mode == appModeAgentChat || mode == appModeAdvancedChat
}

// demoApp is an app of the demo API's catalogue: the directory has its name, mode, status and workspace; these are the
// columns of Dify's apps and tags tables that the directory does not read.
type demoApp struct {
	ID          string
	Description string
	Tags        []string
	CreatedBy   string // the author's account id
}

// demoAPI stands in for Dify's API behind the proxy: the part of /openapi/v1 that Dify's CLI uses, in Dify's response
// shapes, over the seeded directory. Like an upstream that trusts authgate, it takes the caller, the workspace and the
// app only from the x-authgate-* headers extauthz set; it never reads the bearer token and never checks membership.
// So it is only as safe as the proxy in front of it: anyone who reaches its port directly can claim any identity.
type demoAPI struct {
	dir     directory.Directory
	apps    []demoApp
	log     *slog.Logger
	updated time.Time // updated_at of every demo app
	runs    *runLog
	// pause runs between two streamed chunks of a run; it paces the demo so a streamed answer is seen arriving.
	pause func(context.Context) error
	mux   *http.ServeMux
}

// chunkPause is the demo's pace between streamed chunks of an answer.
const chunkPause = 40 * time.Millisecond

func newDemoAPI(dir directory.Directory, apps []demoApp, log *slog.Logger) *demoAPI {
	a := &demoAPI{dir: dir, apps: apps, log: log, updated: time.Now().UTC().Truncate(time.Second), runs: newRunLog(256),
		pause: pauseFor(chunkPause)}
	const p = "/openapi/v1"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+p+"/_health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET "+p+"/_version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": demoDifyVersion, "edition": "SELF_HOSTED"})
	})
	mux.HandleFunc("GET "+p+"/workspaces", a.listWorkspaces)
	mux.HandleFunc("GET "+p+"/workspaces/{workspace_id}", a.getWorkspace)
	mux.HandleFunc("GET "+p+"/apps", a.listApps)
	mux.HandleFunc("GET "+p+"/apps/{app_id}/info", a.appInfo)
	mux.HandleFunc("GET "+p+"/apps/{app_id}/describe", a.describeApp)
	mux.HandleFunc("POST "+p+"/apps/{app_id}/run", a.runApp)
	mux.HandleFunc("POST "+p+"/apps/{app_id}/tasks/{task_id}/stop", a.stopTask)
	mux.HandleFunc("GET "+p+"/apps/{app_id}/tasks/{task_id}/events", a.taskEvents)
	a.mux = mux
	return a
}

func pauseFor(d time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
}

func (a *demoAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	if _, pattern := a.mux.Handler(r); pattern == "" {
		writeError(sw, http.StatusNotFound, "not_found", "The requested URL was not found on the server.")
	} else {
		a.mux.ServeHTTP(sw, r)
	}
	// What the demo acted on, so a developer sees the identity the proxy handed it (never the token or the email).
	id := identityOf(r)
	a.log.InfoContext(r.Context(), "demo api", "method", r.Method, "path", r.URL.Path, "status", sw.status(),
		"subject_type", id.subjectType, "account_id", id.accountID, "tenant_id", id.tenantID, "app_id", id.appID)
}

// statusWriter remembers the status for the log line; Unwrap keeps http.ResponseController's Flush working.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int { return cmp.Or(s.code, http.StatusOK) }

// identity is what extauthz told the upstream about a request: its allow headers (docs/reference/check.md, "Allow
// responses").
type identity struct {
	subjectType, accountID, email, issuer, tenantID, appID string
}

func identityOf(r *http.Request) identity {
	h := r.Header
	return identity{
		subjectType: h.Get(pipeline.HeaderSubjectType),
		accountID:   h.Get(pipeline.HeaderAccountID),
		email:       h.Get(pipeline.HeaderSubjectEmail),
		issuer:      h.Get(pipeline.HeaderSubjectIssuer),
		tenantID:    h.Get(pipeline.HeaderTenantID),
		appID:       h.Get(pipeline.HeaderAppID),
	}
}

// subject names the caller for ownership of runs: the account, else the external SSO subject.
func (id identity) subject() string {
	switch {
	case id.accountID != "":
		return "account:" + id.accountID
	case id.email != "" && id.issuer != "":
		return "sso:" + id.issuer + ":" + strings.ToLower(id.email)
	default:
		return ""
	}
}

// caller answers 401 unless the proxy identified the caller; every route but _health and _version needs one.
func caller(w http.ResponseWriter, r *http.Request) (identity, bool) {
	id := identityOf(r)
	if id.subjectType == "" || id.subject() == "" {
		writeError(w, http.StatusUnauthorized, "unauthorized",
			"no identity from the proxy: call this API through the Envoy stand-in with a bearer token")
		return id, false
	}
	return id, true
}

// errorBody is Dify's error envelope for /openapi/v1 (its ErrorBody).
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Code: code, Message: message, Status: status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *demoAPI) failed(w http.ResponseWriter, r *http.Request, what string, err error) {
	a.log.ErrorContext(r.Context(), "demo api: "+what, "error", err)
	writeError(w, http.StatusInternalServerError, "internal_server_error", "the demo API could not read the directory")
}

// Workspaces.

type workspaceSummary struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Status  string `json:"status"`
	Current bool   `json:"current"`
}

type workspaceDetail struct {
	workspaceSummary
	CreatedAt *string `json:"created_at"`
}

// listWorkspaces answers GET /workspaces: the caller's workspaces (the directory lists only normal ones).
func (a *demoAPI) listWorkspaces(w http.ResponseWriter, r *http.Request) {
	if _, list, ok := a.callerWorkspaces(w, r); ok {
		writeJSON(w, http.StatusOK, map[string][]workspaceSummary{"workspaces": list})
	}
}

// callerWorkspaces is the caller and its workspaces; when ok is false the answer has been written.
func (a *demoAPI) callerWorkspaces(w http.ResponseWriter, r *http.Request) (identity, []workspaceSummary, bool) {
	id, ok := caller(w, r)
	if !ok {
		return identity{}, nil, false
	}
	out := []workspaceSummary{}
	if id.accountID == "" { // an external SSO subject has no workspaces, as in Dify
		return id, out, true
	}
	list, err := a.dir.Workspaces(r.Context(), id.accountID)
	if err != nil {
		a.failed(w, r, "workspaces", err)
		return identity{}, nil, false
	}
	for _, ws := range list {
		out = append(out, workspaceSummary{ID: ws.ID, Name: ws.Name, Role: ws.Role, Status: directory.TenantStatusNormal,
			Current: ws.Current})
	}
	return id, out, true
}

// getWorkspace answers GET /workspaces/{workspace_id} for the workspace extauthz verified.
func (a *demoAPI) getWorkspace(w http.ResponseWriter, r *http.Request) {
	id, list, ok := a.callerWorkspaces(w, r)
	if !ok {
		return
	}
	i := slices.IndexFunc(list, func(ws workspaceSummary) bool { return id.tenantID != "" && ws.ID == id.tenantID })
	if i < 0 {
		writeError(w, http.StatusNotFound, "not_found", "workspace not found")
		return
	}
	writeJSON(w, http.StatusOK, workspaceDetail{workspaceSummary: list[i]})
}

// Apps.

type tagItem struct {
	Name string `json:"name"`
}

type appListRow struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	Mode          string    `json:"mode"`
	Tags          []tagItem `json:"tags"`
	UpdatedAt     string    `json:"updated_at"`
	CreatedByName *string   `json:"created_by_name"`
	WorkspaceID   string    `json:"workspace_id"`
	WorkspaceName string    `json:"workspace_name"`
}

type appListResponse struct {
	Page    int          `json:"page"`
	Limit   int          `json:"limit"`
	Total   int          `json:"total"`
	HasMore bool         `json:"has_more"`
	Data    []appListRow `json:"data"`
}

type appInfoResponse struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Mode        string    `json:"mode"`
	Author      *string   `json:"author"`
	Tags        []tagItem `json:"tags"`
}

type appDescribeInfo struct {
	appInfoResponse
	UpdatedAt         string `json:"updated_at"`
	ServiceAPIEnabled bool   `json:"service_api_enabled"`
	IsAgent           bool   `json:"is_agent"`
}

type appDescribeResponse struct {
	Info        *appDescribeInfo `json:"info"`
	Parameters  map[string]any   `json:"parameters"`
	InputSchema map[string]any   `json:"input_schema"`
}

// resolvedApp is an app as the directory has it, with the demo catalogue's details.
type resolvedApp struct {
	directory.App
	demoApp
	author *string
}

func (a *demoAPI) resolve(ctx context.Context, d demoApp) (resolvedApp, bool, error) {
	app, _, _, err := a.dir.AppWithTenant(ctx, d.ID)
	if errors.Is(err, directory.ErrNotFound) || (err == nil && app.Status != directory.AppStatusNormal) {
		return resolvedApp{}, false, nil
	}
	if err != nil {
		return resolvedApp{}, false, err
	}
	out := resolvedApp{App: app, demoApp: d}
	if d.CreatedBy != "" {
		if acct, err := a.dir.Account(ctx, d.CreatedBy); err == nil {
			out.author = &acct.Name
		} else if !errors.Is(err, directory.ErrNotFound) {
			return resolvedApp{}, false, err
		}
	}
	return out, true, nil
}

// proxiedApp resolves the app extauthz resolved for this request (x-authgate-app-id) in the workspace it verified.
// Either header missing is a request that did not come through extauthz's app step: refused, never guessed from the path.
func (a *demoAPI) proxiedApp(w http.ResponseWriter, r *http.Request) (identity, resolvedApp, bool) {
	id, ok := caller(w, r)
	if !ok {
		return id, resolvedApp{}, false
	}
	if id.appID == "" || id.tenantID == "" {
		writeError(w, http.StatusForbidden, "forbidden", "the proxy resolved no app and workspace for this request")
		return id, resolvedApp{}, false
	}
	d := demoApp{ID: id.appID}
	if i := slices.IndexFunc(a.apps, func(c demoApp) bool { return strings.EqualFold(c.ID, id.appID) }); i >= 0 {
		d = a.apps[i]
	}
	app, found, err := a.resolve(r.Context(), d)
	switch {
	case err != nil:
		a.failed(w, r, "app", err)
		return id, resolvedApp{}, false
	case !found || !strings.EqualFold(app.TenantID, id.tenantID):
		writeError(w, http.StatusNotFound, "not_found", "app not found")
		return id, resolvedApp{}, false
	}
	return id, app, true
}

func tagItems(tags []string) []tagItem {
	out := make([]tagItem, 0, len(tags))
	for _, t := range tags {
		out = append(out, tagItem{Name: t})
	}
	return out
}

func (a *demoAPI) info(app resolvedApp) appInfoResponse {
	return appInfoResponse{ID: app.App.ID, Name: app.Name, Description: app.Description, Mode: app.Mode, Author: app.author,
		Tags: tagItems(app.Tags)}
}

func (a *demoAPI) updatedAt() string { return a.updated.Format("2006-01-02T15:04:05") }

// listApps answers GET /apps?workspace_id=&page=&limit=&mode=&name=&tag= for the workspace extauthz verified
// (x-authgate-tenant-id), as Dify filters: mode exactly, name as a case-insensitive substring (or an app id), tag by name.
func (a *demoAPI) listApps(w http.ResponseWriter, r *http.Request) {
	id, ok := caller(w, r)
	if !ok {
		return
	}
	if id.tenantID == "" {
		writeError(w, http.StatusForbidden, "forbidden", "the proxy verified no workspace for this request")
		return
	}
	q := r.URL.Query()
	page, err := intParam(q, "page", 1, 1, 1<<30)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", err.Error())
		return
	}
	limit, err := intParam(q, "limit", 20, 1, 200)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", err.Error())
		return
	}
	mode, name, tag := q.Get("mode"), q.Get("name"), q.Get("tag")
	switch {
	case mode != "" && !slices.Contains(appModes, mode):
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", "mode: must be one of "+strings.Join(appModes, ", "))
		return
	case len(name) > 200:
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", "name: at most 200 characters")
		return
	case len(tag) > 100:
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", "tag: at most 100 characters")
		return
	}
	tenant, err := a.dir.Tenant(r.Context(), id.tenantID)
	if err != nil && !errors.Is(err, directory.ErrNotFound) {
		a.failed(w, r, "tenant", err)
		return
	}
	appID, byID := ids.Canonical(name) // Dify looks a name that is an app id up by id
	var rows []appListRow
	for _, d := range a.apps {
		app, found, err := a.resolve(r.Context(), d)
		if err != nil {
			a.failed(w, r, "app", err)
			return
		}
		switch {
		case !found || !strings.EqualFold(app.TenantID, id.tenantID):
		case byID && !strings.EqualFold(app.App.ID, appID):
		case !byID && mode != "" && app.Mode != mode:
		case !byID && name != "" && !strings.Contains(strings.ToLower(app.Name), strings.ToLower(name)):
		case !byID && tag != "" && !slices.Contains(app.Tags, tag):
		default:
			rows = append(rows, appListRow{ID: app.App.ID, Name: app.Name, Description: app.Description, Mode: app.Mode,
				Tags: tagItems(app.Tags), UpdatedAt: a.updatedAt(), CreatedByName: app.author, WorkspaceID: tenant.ID,
				WorkspaceName: tenant.Name})
		}
	}
	if byID {
		page, limit = 1, 1
	}
	total := len(rows)
	from := min((page-1)*limit, total)
	to := min(from+limit, total)
	writeJSON(w, http.StatusOK, appListResponse{Page: page, Limit: limit, Total: total, HasMore: page*limit < total,
		Data: append([]appListRow{}, rows[from:to]...)})
}

func intParam(q url.Values, name string, fallback, lo, hi int) (int, error) {
	raw := q.Get(name)
	if raw == "" {
		return fallback, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("%s: must be an integer from %d to %d", name, lo, hi)
	}
	return v, nil
}

// appInfo answers GET /apps/{app_id}/info.
func (a *demoAPI) appInfo(w http.ResponseWriter, r *http.Request) {
	_, app, ok := a.proxiedApp(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, a.info(app))
}

// describeFields are the blocks of GET /apps/{app_id}/describe; ?fields= picks some (comma separated), none means all.
var describeFields = []string{"info", "parameters", "input_schema"}

// describeApp answers GET /apps/{app_id}/describe?fields=: the app's info, its parameters (Dify's app parameters) and
// the JSON Schema of a run request's body.
func (a *demoAPI) describeApp(w http.ResponseWriter, r *http.Request) {
	_, app, ok := a.proxiedApp(w, r)
	if !ok {
		return
	}
	want := map[string]bool{}
	for f := range strings.SplitSeq(r.URL.Query().Get("fields"), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(describeFields, f) {
			writeError(w, http.StatusUnprocessableEntity, "invalid_param",
				fmt.Sprintf("fields: unknown field %q (one of %s)", f, strings.Join(describeFields, ", ")))
			return
		}
		want[f] = true
	}
	all := len(want) == 0
	var out appDescribeResponse
	if all || want["info"] {
		out.Info = &appDescribeInfo{appInfoResponse: a.info(app), UpdatedAt: a.updatedAt(), ServiceAPIEnabled: app.EnableAPI,
			IsAgent: app.Mode == appModeAgentChat || app.Mode == appModeAdvancedChat}
	}
	if all || want["parameters"] {
		out.Parameters = appParameters(app.Mode)
	}
	if all || want["input_schema"] {
		out.InputSchema = inputSchema(app.Mode)
	}
	writeJSON(w, http.StatusOK, out)
}

// The demo workflow's one input: a required text of at most workflowTextMax characters, returned as its output.
const (
	workflowInput   = "text"
	workflowTextMax = 256
)

// userInputForm is Dify's user_input_form of a demo app: chat apps take only the query, workflows one text.
func userInputForm(mode string) []any {
	if mode != appModeWorkflow {
		return []any{}
	}
	return []any{map[string]any{"text-input": map[string]any{
		"label": "Text", "variable": workflowInput, "required": true, "max_length": workflowTextMax, "default": ""}}}
}

// appParameters is Dify's app parameters payload (the service API's /parameters) for a demo app: every feature off.
func appParameters(mode string) map[string]any {
	off := map[string]any{"enabled": false}
	return map[string]any{
		"opening_statement":                nil,
		"suggested_questions":              []string{},
		"suggested_questions_after_answer": off,
		"speech_to_text":                   off,
		"text_to_speech":                   off,
		"retriever_resource":               off,
		"annotation_reply":                 off,
		"more_like_this":                   off,
		"user_input_form":                  userInputForm(mode),
		"sensitive_word_avoidance":         off,
		"file_upload":                      off,
		"system_parameters": map[string]int{"image_file_size_limit": 10, "video_file_size_limit": 100,
			"audio_file_size_limit": 50, "file_size_limit": 15, "workflow_file_upload_limit": 10},
	}
}

// inputSchema is the JSON Schema (draft 2020-12) of a run request's body, derived from the input form as Dify does:
// chat apps need a non-empty query, every app an inputs object.
func inputSchema(mode string) map[string]any {
	inputProps, inputRequired := map[string]any{}, []string{}
	if mode == appModeWorkflow {
		inputProps[workflowInput] = map[string]any{"type": "string", "title": "Text", "maxLength": workflowTextMax}
		inputRequired = append(inputRequired, workflowInput)
	}
	props, required := map[string]any{}, []string{}
	if isChatMode(mode) {
		props["query"] = map[string]any{"type": "string", "minLength": 1}
		required = append(required, "query")
	}
	props["inputs"] = map[string]any{"type": "object", "properties": inputProps, "required": inputRequired,
		"additionalProperties": false}
	required = append(required, "inputs")
	return map[string]any{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
		"properties": props, "required": required}
}
