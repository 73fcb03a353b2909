package extauthz

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/authgate/authgate/internal/pipeline"
)

// checkResponse is the Decision a Check answers with; the server's codec encodes it as a CheckResponse.
type checkResponse struct{ d pipeline.Decision }

// Every header is set with OVERWRITE_IF_EXISTS_OR_ADD: Envoy's default appends a duplicate.
const overwriteIfExistsOrAdd = uint64(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)

// rpcCode is docs/reference/check.md's mapping from HTTP status to the CheckResponse status.
func rpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case 401:
		return codes.Unauthenticated
	case 429:
		return codes.ResourceExhausted
	case 503:
		return codes.Unavailable
	default:
		return codes.PermissionDenied
	}
}

type errorBody struct {
	Error        pipeline.Code `json:"error"`
	Message      string        `json:"message"`
	RetryAfterMS *int64        `json:"retry_after_ms,omitempty"`
}

// appendCheckResponse appends d encoded as a CheckResponse. It writes the wire format directly, each message's size
// computed before its body: building the generated messages and marshalling them by reflection (the dynamic metadata is a
// map of Values) cost a warm Check more than deciding it. FuzzEncodeMatchesGenerated holds it to the generated types.
func appendCheckResponse(b []byte, d pipeline.Decision) []byte {
	d = validUTF8(d)
	if d.Allow {
		b = appendLengthPrefix(b, responseStatus, 0) // code OK: every field at its default, but the status is present
		b = appendLengthPrefix(b, responseOK, okResponseSize(d))
		b = appendHeaderOptions(b, okHeaders, d.SetHeaders)
		for _, name := range d.RemoveHeaders {
			b = appendRepeatedString(b, okHeadersToRemove, name)
		}
		b = appendHeaderOptions(b, okResponseHeadersToAdd, d.ResponseHeaders)
	} else {
		code, message := uint64(rpcCode(d.Status)), string(d.Code)
		b = appendLengthPrefix(b, responseStatus, varintSize(statusCode, code)+stringSize(statusMessage, message))
		b = appendVarint(b, statusCode, code)
		b = appendString(b, statusMessage, message)

		headers := append([]pipeline.Header{{Name: "content-type", Value: "application/json"}}, d.DenyHeaders...)
		body := denyBody(d)
		status := varintSize(httpStatusCode, uint64(d.Status))
		size := protowire.SizeTag(deniedStatus) + protowire.SizeBytes(status) + headerOptionsSize(deniedHeaders, headers) +
			stringSize(deniedBody, body)
		b = appendLengthPrefix(b, responseDenied, size)
		b = appendLengthPrefix(b, deniedStatus, status)
		b = appendVarint(b, httpStatusCode, uint64(d.Status))
		b = appendHeaderOptions(b, deniedHeaders, headers)
		b = appendString(b, deniedBody, body)
	}
	return appendMetadata(b, d.Metadata)
}

func denyBody(d pipeline.Decision) string {
	body := errorBody{Error: d.Code, Message: d.Message}
	if d.Status == 429 {
		ms := d.RetryAfter.Milliseconds()
		body.RetryAfterMS = &ms
	}
	raw, _ := json.Marshal(body) // strings and an int: cannot fail
	return string(raw)
}

func okResponseSize(d pipeline.Decision) int {
	n := headerOptionsSize(okHeaders, d.SetHeaders) + headerOptionsSize(okResponseHeadersToAdd, d.ResponseHeaders)
	for _, name := range d.RemoveHeaders {
		n += protowire.SizeTag(okHeadersToRemove) + protowire.SizeBytes(len(name))
	}
	return n
}

func headerValueSize(h pipeline.Header) int {
	return stringSize(headerValueKey, h.Name) + stringSize(headerValueValue, h.Value)
}

func headerOptionSize(h pipeline.Header) int {
	return protowire.SizeTag(headerOptionHeader) + protowire.SizeBytes(headerValueSize(h)) +
		varintSize(headerOptionAppend, overwriteIfExistsOrAdd)
}

func headerOptionsSize(num protowire.Number, hs []pipeline.Header) int {
	n := 0
	for _, h := range hs {
		n += protowire.SizeTag(num) + protowire.SizeBytes(headerOptionSize(h))
	}
	return n
}

func appendHeaderOptions(b []byte, num protowire.Number, hs []pipeline.Header) []byte {
	for _, h := range hs {
		b = appendLengthPrefix(b, num, headerOptionSize(h))
		b = appendLengthPrefix(b, headerOptionHeader, headerValueSize(h))
		b = appendString(b, headerValueKey, h.Name)
		b = appendString(b, headerValueValue, h.Value)
		b = appendVarint(b, headerOptionAppend, overwriteIfExistsOrAdd)
	}
	return b
}

// appendMetadata writes m as the dynamic_metadata Struct, each value a string Value; nothing when m is empty.
func appendMetadata(b []byte, m map[string]string) []byte {
	if len(m) == 0 {
		return b
	}
	size := 0
	for k, v := range m {
		size += protowire.SizeTag(structFields) + protowire.SizeBytes(metadataEntrySize(k, v))
	}
	b = appendLengthPrefix(b, responseDynamicMetadata, size)
	for k, v := range m {
		b = appendLengthPrefix(b, structFields, metadataEntrySize(k, v))
		b = appendRepeatedString(b, mapEntryKey, k)
		b = appendLengthPrefix(b, mapEntryValue, stringValueSize(v))
		b = appendRepeatedString(b, valueStringValue, v) // a oneof case: written even when empty
	}
	return b
}

func stringValueSize(v string) int {
	return protowire.SizeTag(valueStringValue) + protowire.SizeBytes(len(v))
}

func metadataEntrySize(k, v string) int {
	return protowire.SizeTag(mapEntryKey) + protowire.SizeBytes(len(k)) +
		protowire.SizeTag(mapEntryValue) + protowire.SizeBytes(stringValueSize(v))
}

// stringSize and appendString follow proto3: an empty singular string is not written.
func stringSize(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendRepeatedString(b, num, s)
}

// appendRepeatedString writes s even when empty, as an element of a repeated field or a set oneof case must be.
func appendRepeatedString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func varintSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendLengthPrefix starts a message field whose body, size bytes long, the caller appends next.
func appendLengthPrefix(b []byte, num protowire.Number, size int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(size))
}

// validUTF8 returns d with every string valid UTF-8, invalid bytes replaced by U+FFFD: protobuf requires it of string
// fields, and a parser that enforces it (Envoy's does, for proto3) would reject the whole response. Request data reaches
// a Decision (the request id in the metadata, client header names in headers_to_remove), and the decoder accepts any
// bytes. d is returned as it is, without allocating, when nothing needs fixing; the deny body is JSON, valid already.
func validUTF8(d pipeline.Decision) pipeline.Decision {
	if decisionIsValidUTF8(d) {
		return d
	}
	fix := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
	fixHeaders := func(hs []pipeline.Header) []pipeline.Header {
		out := make([]pipeline.Header, len(hs))
		for i, h := range hs {
			out[i] = pipeline.Header{Name: fix(h.Name), Value: fix(h.Value)}
		}
		return out
	}
	d.Code, d.Message = pipeline.Code(fix(string(d.Code))), fix(d.Message)
	d.SetHeaders, d.DenyHeaders = fixHeaders(d.SetHeaders), fixHeaders(d.DenyHeaders)
	d.ResponseHeaders = fixHeaders(d.ResponseHeaders)
	removes := make([]string, len(d.RemoveHeaders))
	for i, name := range d.RemoveHeaders {
		removes[i] = fix(name)
	}
	d.RemoveHeaders = removes
	metadata := make(map[string]string, len(d.Metadata))
	for k, v := range d.Metadata {
		metadata[fix(k)] = fix(v)
	}
	d.Metadata = metadata
	return d
}

func decisionIsValidUTF8(d pipeline.Decision) bool {
	if !utf8.ValidString(string(d.Code)) || !utf8.ValidString(d.Message) {
		return false
	}
	for _, hs := range [][]pipeline.Header{d.SetHeaders, d.DenyHeaders, d.ResponseHeaders} {
		for _, h := range hs {
			if !utf8.ValidString(h.Name) || !utf8.ValidString(h.Value) {
				return false
			}
		}
	}
	for _, name := range d.RemoveHeaders {
		if !utf8.ValidString(name) {
			return false
		}
	}
	for k, v := range d.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}
