package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/authgate/authgate/internal/ids"
)

// maxRunBody bounds a run request's body.
const maxRunBody = 1 << 20

// maxChunks bounds how many events an answer is streamed in, so a long message is not paced for minutes.
const maxChunks = 50

// runRequest is Dify's AppRunRequest.
type runRequest struct {
	Inputs         map[string]any   `json:"inputs"`
	Query          *string          `json:"query"`
	ConversationID *string          `json:"conversation_id"`
	Files          []map[string]any `json:"files"`
	WorkflowID     *string          `json:"workflow_id"`
	WorkspaceID    *string          `json:"workspace_id"`
}

// runApp answers POST /apps/{app_id}/run as Dify does, always as a server-sent event stream: a chat app answers with
// the query (message events, then message_end), a workflow returns its text input as its output (workflow_started,
// node and text_chunk events, workflow_finished). The run goes on if the client leaves, and can be stopped or
// followed again (tasks/{task_id}/stop and /events) by the subject that started it.
func (a *demoAPI) runApp(w http.ResponseWriter, r *http.Request) {
	id, app, ok := a.proxiedApp(w, r)
	if !ok {
		return
	}
	req, ok := decodeRunRequest(w, r)
	if !ok {
		return
	}
	var produce func(*appRun)
	switch {
	case isChatMode(app.Mode) || app.Mode == appModeCompletion:
		query := ""
		if req.Query != nil {
			query = *req.Query
		}
		if isChatMode(app.Mode) && strings.TrimSpace(query) == "" {
			writeError(w, http.StatusUnprocessableEntity, "invalid_param", "query_required_for_chat")
			return
		}
		conversation := ""
		if isChatMode(app.Mode) {
			conversation = uuid.NewString()
			if req.ConversationID != nil && strings.TrimSpace(*req.ConversationID) != "" {
				c, valid := ids.Canonical(strings.TrimSpace(*req.ConversationID))
				if !valid {
					writeError(w, http.StatusUnprocessableEntity, "invalid_param", "conversation_id must be a valid UUID")
					return
				}
				conversation = c // the demo keeps no history: any conversation id continues
			}
		}
		produce = func(rn *appRun) { a.produceAnswer(rn, conversation, query) }
	case app.Mode == appModeWorkflow:
		if req.Query != nil {
			writeError(w, http.StatusUnprocessableEntity, "invalid_param", "query_not_supported_for_workflow")
			return
		}
		text, msg := workflowText(req.Inputs)
		if msg != "" {
			writeError(w, http.StatusBadRequest, "invalid_param", msg)
			return
		}
		produce = func(rn *appRun) { a.produceWorkflow(rn, req.Inputs, text) }
	default:
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", "mode_not_runnable")
		return
	}
	rn := a.runs.start(app.App.ID, app.Mode, id.subject())
	go produce(rn)
	streamEvents(w, r, rn, false)
}

func decodeRunRequest(w http.ResponseWriter, r *http.Request) (runRequest, bool) {
	var req runRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRunBody))
	err := dec.Decode(&req)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	var tooBig *http.MaxBytesError
	var wrongType *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "request_entity_too_large", "the request body is too large")
	case errors.As(err, &wrongType) && wrongType.Field != "":
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", wrongType.Field+": wrong type")
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_request", "the request body must be one JSON object")
	case req.Inputs == nil:
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", "inputs: field required")
	default:
		return req, true
	}
	return runRequest{}, false
}

// workflowText validates the demo workflow's input form as Dify validates a text-input; msg is Dify's message.
func workflowText(inputs map[string]any) (text, msg string) {
	v, present := inputs[workflowInput]
	if !present || v == nil || v == "" {
		return "", workflowInput + " is required in input form"
	}
	s, ok := v.(string)
	switch {
	case !ok:
		return "", workflowInput + " in input form must be a string"
	case len([]rune(s)) > workflowTextMax:
		return "", fmt.Sprintf("%s in input form must be less than %d characters", workflowInput, workflowTextMax)
	}
	return s, ""
}

// produceAnswer streams query back as a chat (or completion) app's answer, in Dify's message events.
func (a *demoAPI) produceAnswer(rn *appRun, conversation, query string) {
	messageID := uuid.NewString()
	created := time.Now().Unix()
	event := func(name string) map[string]any {
		e := map[string]any{"event": name, "task_id": rn.taskID, "id": messageID, "message_id": messageID,
			"created_at": created}
		if conversation != "" {
			e["conversation_id"] = conversation
		}
		return e
	}
	chunks := chunked(query)
	for i, c := range chunks {
		if i > 0 && !a.continueRun(rn) {
			break
		}
		e := event("message")
		e["answer"], e["from_variable_selector"] = c, nil
		rn.append(e)
	}
	tokens := len(strings.Fields(query))
	end := event("message_end")
	end["metadata"] = map[string]any{"retriever_resources": []any{},
		"usage": map[string]int{"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens}}
	end["files"] = []any{}
	rn.append(end)
	rn.finish()
}

// produceWorkflow runs the demo workflow (start -> end, the end node's output is the text input) in Dify's workflow
// events; the end node streams its output as text_chunk events.
func (a *demoAPI) produceWorkflow(rn *appRun, inputs map[string]any, text string) {
	workflowID := uuid.NewSHA1(uuid.NameSpaceURL, []byte("devstack:workflow:"+rn.appID)).String()
	started := time.Now()
	event := func(name string, data map[string]any) map[string]any {
		return map[string]any{"event": name, "task_id": rn.taskID, "workflow_run_id": rn.runID, "data": data}
	}
	node := func(nodeID, nodeType, title string, index int, predecessor any) map[string]any {
		return map[string]any{"id": uuid.NewString(), "node_id": nodeID, "node_type": nodeType, "title": title,
			"index": index, "predecessor_node_id": predecessor, "inputs": inputs, "created_at": time.Now().Unix()}
	}
	finished := func(n map[string]any, outputs map[string]any) map[string]any {
		out := map[string]any{"status": "succeeded", "outputs": outputs, "error": nil, "elapsed_time": 0.0,
			"finished_at": time.Now().Unix()}
		for k, v := range n {
			out[k] = v
		}
		return out
	}
	rn.append(event("workflow_started", map[string]any{"id": rn.runID, "workflow_id": workflowID, "inputs": inputs,
		"created_at": started.Unix()}))
	start := node("start", "start", "Start", 1, nil)
	rn.append(event("node_started", start))
	rn.append(event("node_finished", finished(start, inputs)))
	end := node("end", "end", "End", 2, "start")
	rn.append(event("node_started", end))
	status, outputs := "succeeded", map[string]any{workflowInput: text}
	for i, c := range chunked(text) {
		if i > 0 && !a.continueRun(rn) {
			status, outputs = "stopped", map[string]any{}
			break
		}
		rn.append(event("text_chunk", map[string]any{"text": c, "from_variable_selector": []string{"end", workflowInput}}))
	}
	if status == "succeeded" {
		rn.append(event("node_finished", finished(end, outputs)))
	}
	rn.append(event("workflow_finished", map[string]any{"id": rn.runID, "workflow_id": workflowID, "status": status,
		"outputs": outputs, "error": nil, "elapsed_time": time.Since(started).Seconds(), "total_tokens": 0,
		"total_steps": 2, "created_at": started.Unix(), "finished_at": time.Now().Unix()}))
	rn.finish()
}

// continueRun paces the run and reports whether to go on: false once it was stopped.
func (a *demoAPI) continueRun(rn *appRun) bool {
	if err := a.pause(context.Background()); err != nil {
		return false
	}
	return !rn.isStopped()
}

// chunked splits s after spaces into at most maxChunks pieces that join back to s; "" is one empty piece.
func chunked(s string) []string {
	words := strings.SplitAfter(s, " ")
	per := (len(words) + maxChunks - 1) / maxChunks
	var out []string
	for i := 0; i < len(words); i += per {
		out = append(out, strings.Join(words[i:min(i+per, len(words))], ""))
	}
	return out
}

// stopTask answers POST /apps/{app_id}/tasks/{task_id}/stop. Like Dify it answers success for any task id; it stops
// only a run of this app started by this subject.
func (a *demoAPI) stopTask(w http.ResponseWriter, r *http.Request) {
	id, app, ok := a.proxiedApp(w, r)
	if !ok {
		return
	}
	taskID := r.PathValue("task_id")
	if rn := a.runs.get(taskID); rn != nil && strings.EqualFold(rn.taskID, taskID) && rn.appID == app.App.ID &&
		rn.owner == id.subject() {
		rn.stop()
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "success"})
}

// taskEvents answers GET /apps/{app_id}/tasks/{task_id}/events, where task_id is a workflow run id, as Dify does: only
// for workflow (and advanced-chat) apps; a finished run answers its workflow_finished event, a running one its events
// so far and then the rest as they come (include_state_snapshot=true: every event, finished or not).
func (a *demoAPI) taskEvents(w http.ResponseWriter, r *http.Request) {
	id, app, ok := a.proxiedApp(w, r)
	if !ok {
		return
	}
	if app.Mode != appModeWorkflow && app.Mode != appModeAdvancedChat {
		writeError(w, http.StatusUnprocessableEntity, "invalid_param", "mode_not_supported_for_event_reconnect")
		return
	}
	runID := r.PathValue("task_id")
	rn := a.runs.get(runID)
	if rn == nil || !strings.EqualFold(rn.runID, runID) || rn.appID != app.App.ID || rn.owner != id.subject() {
		writeError(w, http.StatusNotFound, "not_found", "Workflow run not found")
		return
	}
	streamEvents(w, r, rn, rn.isDone() && r.URL.Query().Get("include_state_snapshot") != "true")
}

// streamEvents writes the run's events as server-sent events, each flushed as it is written, until the run is done or
// the client leaves.
func streamEvents(w http.ResponseWriter, r *http.Request, rn *appRun, lastOnly bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	emit := func(e []byte) error {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", e); err != nil {
			return err
		}
		return rc.Flush()
	}
	if lastOnly {
		_ = emit(rn.last())
		return
	}
	_ = rn.follow(r.Context(), emit)
}

// appRun is one app run: its events so far, whether it is done, and whether it was asked to stop.
type appRun struct {
	appID, owner string
	taskID       string
	runID        string // the workflow run id, for workflows

	mu      sync.Mutex
	events  [][]byte
	done    bool
	stopped bool
	changed chan struct{} // closed and replaced on every change
}

func (rn *appRun) append(event map[string]any) {
	b, _ := json.Marshal(event) // the demo's own maps of strings, numbers and the request's JSON inputs: always encodable
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.events = append(rn.events, b)
	close(rn.changed)
	rn.changed = make(chan struct{})
}

func (rn *appRun) finish() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.done = true
	close(rn.changed)
	rn.changed = make(chan struct{})
}

func (rn *appRun) stop() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.stopped = true
}

func (rn *appRun) isStopped() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.stopped
}

func (rn *appRun) isDone() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.done
}

func (rn *appRun) last() []byte {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.events[len(rn.events)-1] // a done run has at least its final event
}

// follow emits every event from the first, then each new one, until the run is done or ctx ends.
func (rn *appRun) follow(ctx context.Context, emit func([]byte) error) error {
	next := 0
	for {
		rn.mu.Lock()
		pending, done, changed := rn.events[next:], rn.done, rn.changed
		rn.mu.Unlock()
		for _, e := range pending {
			if err := emit(e); err != nil {
				return err
			}
			next++
		}
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runLog keeps the most recent runs, findable by task id and by workflow run id.
type runLog struct {
	mu    sync.Mutex
	max   int
	order []*appRun
	byID  map[string]*appRun
}

func newRunLog(max int) *runLog { return &runLog{max: max, byID: map[string]*appRun{}} }

func (l *runLog) start(appID, mode, owner string) *appRun {
	rn := &appRun{appID: appID, owner: owner, taskID: uuid.NewString(), changed: make(chan struct{})}
	if mode == appModeWorkflow || mode == appModeAdvancedChat {
		rn.runID = uuid.NewString()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.order = append(l.order, rn)
	l.byID[rn.taskID] = rn
	if rn.runID != "" {
		l.byID[rn.runID] = rn
	}
	if len(l.order) > l.max {
		old := l.order[0]
		l.order = l.order[1:]
		delete(l.byID, old.taskID)
		delete(l.byID, old.runID)
	}
	return rn
}

func (l *runLog) get(id string) *appRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[strings.ToLower(id)]
}
