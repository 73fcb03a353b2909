package main

import (
	"encoding/json"
	"net/http"
	"strings"
)

// echoed is the echo upstream's answer: the request as it arrived, so a caller sees exactly which identity headers the
// proxy added and which it removed.
type echoed struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

// echoUpstream stands in for Dify's API in the end-to-end tests that inspect the identity headers.
func echoUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := echoed{Method: r.Method, Path: r.URL.RequestURI(), Headers: make(map[string]string, len(r.Header))}
		for name, values := range r.Header {
			out.Headers[strings.ToLower(name)] = strings.Join(values, ",")
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
}
