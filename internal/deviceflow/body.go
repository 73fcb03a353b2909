package deviceflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"unicode/utf8"
)

// maxBody is the largest request body accepted; larger is 413.
const maxBody = 64 << 10

// params are a request's parameters, from a JSON object or a form body. Unknown parameters are ignored (RFC 8628 §3.1), so
// only the parameters a handler reads are validated.
type params struct {
	form   bool
	values map[string][]string
	// invalid names JSON members present with a non-string value.
	invalid map[string]bool
	// repeated names JSON members present more than once.
	repeated map[string]bool
}

// str returns a parameter that must be a single string; a missing one is "". A repeated form parameter (RFC 6749 §3.1) or a
// non-string JSON value is invalid_request.
func (p params) str(name string) (string, *apiError) {
	if p.repeated[name] {
		return "", errorf(http.StatusBadRequest, codeInvalidRequest, name+" must not be repeated")
	}
	if p.invalid[name] {
		return "", errorf(http.StatusBadRequest, codeInvalidRequest, name+" must be a string")
	}
	v := p.values[name]
	switch len(v) {
	case 0:
		return "", nil
	case 1:
		if !utf8.ValidString(v[0]) {
			return "", errorf(http.StatusBadRequest, codeInvalidRequest, name+" is not valid UTF-8")
		}
		return v[0], nil
	}
	return "", errorf(http.StatusBadRequest, codeInvalidRequest, name+" must not be repeated")
}

// has reports whether the parameter was sent at all.
func (p params) has(name string) bool {
	return len(p.values[name]) > 0 || p.invalid[name] || p.repeated[name]
}

// decodeBody reads a JSON or form body of at most maxBody bytes. An empty body is an empty parameter set.
func decodeBody(w http.ResponseWriter, r *http.Request) (params, *apiError) {
	if r.ContentLength > maxBody {
		return params{}, tooLarge()
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return params{}, tooLarge()
		}
		return params{}, errorf(http.StatusBadRequest, codeInvalidRequest, "could not read the request body")
	}
	media := ""
	if ct := r.Header.Get("Content-Type"); ct != "" {
		media, _, err = mime.ParseMediaType(ct)
		if err != nil {
			return params{}, errorf(http.StatusBadRequest, codeInvalidRequest, "malformed Content-Type")
		}
	}
	switch {
	case len(bytes.TrimSpace(raw)) == 0:
		return params{form: media != "application/json"}, nil
	case media == "application/json":
		return decodeJSON(raw)
	case media == "application/x-www-form-urlencoded" || media == "":
		return decodeForm(raw)
	}
	return params{}, errorf(http.StatusUnsupportedMediaType, codeInvalidRequest,
		"the body must be application/json or application/x-www-form-urlencoded")
}

// limitBody answers 413 to a declared body over maxBody on every route, also on routes that never read a body, and caps what
// any handler can read; decodeBody also catches an undeclared (chunked) oversized body.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			noStore(w) // the token endpoint answers every refusal uncacheable; this one comes before its handler
			tooBig := tooLarge()
			writeError(w, tooBig.Status, tooBig.Code, tooBig.Message)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r)
	})
}

func tooLarge() *apiError {
	return errorf(http.StatusRequestEntityTooLarge, codeRequestTooLarge, "the request body is larger than 64 KiB")
}

// decodeJSON reads one JSON object. Its members are read one by one rather than into a map, which would keep only the last
// of two members with the same name: a repeated member is recorded as repeated and refused where it is read, exactly like a
// repeated form parameter, so {"client_id":"evil","client_id":"difyctl"} cannot mean one thing here and another to a parser
// that keeps the first.
func decodeJSON(raw []byte) (params, *apiError) {
	notObject := errorf(http.StatusBadRequest, codeInvalidRequest, "the body is not a JSON object")
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return params{}, notObject
	}
	p := params{values: map[string][]string{}, invalid: map[string]bool{}, repeated: map[string]bool{}}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return params{}, notObject
		}
		name, _ := tok.(string) // an object's keys are always strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return params{}, notObject
		}
		if seen[name] {
			p.repeated[name] = true // whatever the values, even null
			continue
		}
		seen[name] = true
		var s string
		switch {
		case string(v) == "null":
		case json.Unmarshal(v, &s) == nil:
			p.values[name] = []string{s}
		default:
			p.invalid[name] = true
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return params{}, notObject
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return params{}, errorf(http.StatusBadRequest, codeInvalidRequest, "unexpected data after the JSON object")
	}
	return p, nil
}

func decodeForm(raw []byte) (params, *apiError) {
	values, err := url.ParseQuery(string(raw))
	if err != nil {
		return params{}, errorf(http.StatusBadRequest, codeInvalidRequest, "the body is not a valid form encoding")
	}
	return params{form: true, values: values}, nil
}
