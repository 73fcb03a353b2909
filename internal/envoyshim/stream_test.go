package envoyshim_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/authgate/authgate/internal/envoyshim"
)

// gatedUpstream writes first, flushes, then holds the response open until the test closes gate (or 10 s pass, so a
// failing test cannot hang), then writes rest. The client can only see first before gate closes if the proxy passed it
// on as it arrived.
func gatedUpstream(t *testing.T, contentType, first, rest string, withLength bool) (*url.URL, chan struct{}) {
	t.Helper()
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		if withLength {
			w.Header().Set("Content-Length", strconv.Itoa(len(first)+len(rest)))
		}
		_, _ = io.WriteString(w, first)
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("upstream flush: %v", err)
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, rest)
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u, gate
}

// Envoy forwards each chunk of an upstream response as it arrives, whatever its content type or length: a server-sent
// event (an app run's first token) reaches the client while the upstream is still producing the rest.
func TestShimStreamsResponsesAsTheyArrive(t *testing.T) {
	const firstEvent = "data: {\"event\": \"message\", \"answer\": \"hel\"}\n\n"
	const lastEvent = "data: {\"event\": \"message_end\"}\n\n"
	for _, c := range []struct {
		name        string
		contentType string
		withLength  bool
	}{
		{"server-sent events", "text/event-stream", false},
		{"a body of known length", "application/octet-stream", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, client := startAuthz(t, allow())
			up, gate := gatedUpstream(t, c.contentType, firstEvent, lastEvent, c.withLength)
			shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up}}})
			req := newRequest(t, http.MethodPost, shim.URL+"/openapi/v1/apps/a1/run")
			req.Header.Set("Accept", "text/event-stream")

			// Send the request and read the first event while the upstream still holds the stream open: the
			// response headers and the first event must both get through before the gate opens.
			type firstRead struct {
				resp  *http.Response
				body  *bufio.Reader
				first string
				err   error
			}
			got := make(chan firstRead, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					got <- firstRead{err: err}
					return
				}
				body := bufio.NewReader(resp.Body)
				buf := make([]byte, len(firstEvent))
				n, err := io.ReadFull(body, buf)
				got <- firstRead{resp: resp, body: body, first: string(buf[:n]), err: err}
			}()
			var r firstRead
			select {
			case r = <-got:
			case <-time.After(5 * time.Second):
				close(gate)
				t.Fatal("the first event did not reach the client while the upstream held the stream open: the shim buffers")
			}
			if r.err != nil {
				close(gate)
				t.Fatal(r.err)
			}
			defer r.resp.Body.Close()
			if r.resp.StatusCode != http.StatusOK || r.first != firstEvent {
				close(gate)
				t.Fatalf("status %d, first read %q, want 200 and %q", r.resp.StatusCode, r.first, firstEvent)
			}

			close(gate)
			rest, err := io.ReadAll(r.body)
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != lastEvent {
				t.Fatalf("rest of the stream %q, want %q", rest, lastEvent)
			}
			if got := r.resp.Header.Get("Content-Type"); got != c.contentType {
				t.Errorf("content-type %q, want %q", got, c.contentType)
			}
		})
	}
}

// Envoy streams a request and its response at the same time: an upstream may answer (an app run's first event) before
// it has read the whole request, and the client may still be sending it. The first event reaches the client while its
// request body is still open, and the upstream then receives that body whole.
func TestShimStreamsRequestAndResponseAtOnce(t *testing.T) {
	t.Parallel()
	const firstEvent = "data: {\"event\": \"workflow_started\"}\n\n"
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("upstream full duplex: %v", err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, firstEvent)
		_ = rc.Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream reading the request after answering: %v", err)
		}
		_, _ = io.WriteString(w, "data: {\"received\": "+strconv.Quote(string(body))+"}\n\n")
	}))
	t.Cleanup(srv.Close)
	up, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, client := startAuthz(t, allow())
	shim := startShim(t, envoyshim.Config{Authz: client, Routes: []envoyshim.Route{{Prefix: "/", Upstream: up}}})

	bodyReader, bodyWriter := io.Pipe()
	req := newRequest(t, http.MethodPost, shim.URL+"/openapi/v1/apps/a1/run")
	req.Body = bodyReader // sent chunked, and still open while the first event is awaited
	go func() { _, _ = io.WriteString(bodyWriter, `{"inputs": {}, `) }()

	type firstRead struct {
		resp  *http.Response
		body  *bufio.Reader
		first string
		err   error
	}
	got := make(chan firstRead, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- firstRead{err: err}
			return
		}
		body := bufio.NewReader(resp.Body)
		buf := make([]byte, len(firstEvent))
		n, err := io.ReadFull(body, buf)
		got <- firstRead{resp: resp, body: body, first: string(buf[:n]), err: err}
	}()
	var r firstRead
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		close(gate)
		_ = bodyWriter.Close()
		t.Fatal("the first event did not reach the client while it was still sending its request")
	}
	if r.err != nil || r.first != firstEvent {
		close(gate)
		_ = bodyWriter.Close()
		t.Fatalf("first read %q, %v", r.first, r.err)
	}
	defer r.resp.Body.Close()

	// Finish the request, then let the upstream read it and end the stream.
	if _, err := io.WriteString(bodyWriter, `"query": "hi"}`); err != nil {
		t.Fatal(err)
	}
	_ = bodyWriter.Close()
	close(gate)
	rest, err := io.ReadAll(r.body)
	if err != nil {
		t.Fatalf("the stream broke: %v", err)
	}
	if want := "data: {\"received\": " + strconv.Quote(`{"inputs": {}, "query": "hi"}`) + "}\n\n"; string(rest) != want {
		t.Fatalf("rest of the stream %q, want %q", rest, want)
	}
}
