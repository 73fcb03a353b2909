package extauthz

import (
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/authgate/authgate/internal/pipeline"
)

// checkRequest is an envoy.service.auth.v3.CheckRequest as a Check needs it, read straight off the wire.
type checkRequest struct {
	req  pipeline.Request // all but ClientIP, which depends on the server's trusted hops
	peer string           // attributes.source.address.socket_address.address
}

// decodeCheckRequest reads a CheckRequest without building the generated message: protobuf's reflective decoding of the
// header map (several allocations per header) was the largest cost of a warm Check. It follows protobuf's rules where
// they matter (the last value of a scalar wins, a message that appears twice merges, a field of an unexpected wire type
// is skipped as unknown) and FuzzDecodeMatchesGenerated holds it to proto.Unmarshal. It differs in one way on purpose:
// strings need not be valid UTF-8. proto.Unmarshal would fail the call on a header with Latin-1 bytes, and a failed call
// is what Envoy's failure_mode_allow lets through; decoded here, the request gets an ordinary decision instead.
func decodeCheckRequest(b []byte) (checkRequest, error) {
	d := wireDecoder{b: b, s: string(b)}
	err := d.fields(0, len(b), func(num protowire.Number, from, to int) error {
		if num == checkRequestAttributes {
			return d.attributes(from, to)
		}
		return nil
	})
	if err != nil {
		return checkRequest{}, err
	}
	return d.result(), nil
}

type wireDecoder struct {
	b []byte
	s string // b as one string: every string decoded is a substring of it, not an allocation of its own

	id, method, path, query, peer string
	headers                       map[string]string
	headerMap                     []pipeline.Header
	// otherAddress is set while Address's oneof holds a case other than socket_address, which clears the socket address.
	otherAddress bool
}

// fields calls fn with the number and payload range of every length-delimited field of the message in b[start:end] and
// skips the others.
func (d *wireDecoder) fields(start, end int, fn func(num protowire.Number, from, to int) error) error {
	for i := start; i < end; {
		num, typ, n := protowire.ConsumeTag(d.b[i:end])
		if n < 0 {
			return protowire.ParseError(n)
		}
		i += n
		if typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, d.b[i:end])
			if m < 0 {
				return protowire.ParseError(m)
			}
			i += m
			continue
		}
		size, m := protowire.ConsumeVarint(d.b[i:end])
		if m < 0 {
			return protowire.ParseError(m)
		}
		i += m
		if size > uint64(end-i) {
			return io.ErrUnexpectedEOF
		}
		if err := fn(num, i, i+int(size)); err != nil {
			return err
		}
		i += int(size)
	}
	return nil
}

func (d *wireDecoder) attributes(start, end int) error {
	return d.fields(start, end, func(num protowire.Number, from, to int) error {
		switch num {
		case attributesSource:
			return d.fields(from, to, func(num protowire.Number, from, to int) error {
				if num == peerAddress {
					return d.address(from, to)
				}
				return nil
			})
		case attributesRequest:
			return d.fields(from, to, func(num protowire.Number, from, to int) error {
				if num == requestHTTP {
					return d.http(from, to)
				}
				return nil
			})
		}
		return nil
	})
}

func (d *wireDecoder) address(start, end int) error {
	return d.fields(start, end, func(num protowire.Number, from, to int) error {
		switch num {
		case addressSocketAddress:
			if d.otherAddress {
				d.peer, d.otherAddress = "", false
			}
			return d.fields(from, to, func(num protowire.Number, from, to int) error {
				if num == socketAddressAddress {
					d.peer = d.s[from:to]
				}
				return nil
			})
		default: // pipe, envoy_internal_address, or a case added later: each replaces the socket address
			d.peer, d.otherAddress = "", true
		}
		return nil
	})
}

func (d *wireDecoder) http(start, end int) error {
	return d.fields(start, end, func(num protowire.Number, from, to int) error {
		switch num {
		case httpID:
			d.id = d.s[from:to]
		case httpMethod:
			d.method = d.s[from:to]
		case httpPath:
			d.path = d.s[from:to]
		case httpQuery:
			d.query = d.s[from:to]
		case httpHeaders:
			return d.mapEntry(from, to)
		case httpHeaderMap:
			return d.fields(from, to, func(num protowire.Number, from, to int) error {
				if num == headerMapHeaders {
					return d.headerValue(from, to)
				}
				return nil
			})
		}
		return nil
	})
}

func (d *wireDecoder) mapEntry(start, end int) error {
	var key, value string
	err := d.fields(start, end, func(num protowire.Number, from, to int) error {
		switch num {
		case mapEntryKey:
			key = d.s[from:to]
		case mapEntryValue:
			value = d.s[from:to]
		}
		return nil
	})
	if err != nil {
		return err
	}
	if d.headers == nil {
		d.headers = make(map[string]string, 16)
	}
	d.headers[key] = value
	return nil
}

func (d *wireDecoder) headerValue(start, end int) error {
	var key, value, raw string
	err := d.fields(start, end, func(num protowire.Number, from, to int) error {
		switch num {
		case headerValueKey:
			key = d.s[from:to]
		case headerValueValue:
			value = d.s[from:to]
		case headerValueRawValue:
			raw = d.s[from:to]
		}
		return nil
	})
	if err != nil {
		return err
	}
	if value == "" {
		value = raw
	}
	d.headerMap = append(d.headerMap, pipeline.Header{Name: key, Value: value})
	return nil
}

// result applies Envoy's conventions: header names lower-cased and repeats joined with commas, the path and method taken
// from the pseudo-headers when the fields are empty, the query appended to a path that lacks one. The request id is
// x-request-id, else the attribute.
func (d *wireDecoder) result() checkRequest {
	headers := d.headers
	// Envoy sends lower-cased names, already joined: the usual map is used as it is.
	if len(d.headerMap) > 0 || !namesLowerCase(headers) {
		headers = make(map[string]string, len(d.headers)+len(d.headerMap))
		for k, v := range d.headers {
			addHeader(headers, k, v)
		}
		for _, h := range d.headerMap {
			addHeader(headers, h.Name, h.Value)
		}
	}
	path := d.path
	if path == "" {
		path = headers[":path"]
	}
	if d.query != "" && !strings.Contains(path, "?") {
		path += "?" + d.query
	}
	method := d.method
	if method == "" {
		method = headers[":method"]
	}
	// x-request-id first: Envoy sets attributes.request.http.id to its own stream id, which appears in no other log, while
	// x-request-id is the id Envoy's access log, Dify and every other hop record for the request.
	id := headers["x-request-id"]
	if id == "" {
		id = d.id
	}
	return checkRequest{
		req:  pipeline.Request{Method: method, Path: path, Headers: headers, RequestID: id},
		peer: d.peer,
	}
}

func namesLowerCase(headers map[string]string) bool {
	for name := range headers {
		for i := 0; i < len(name); i++ {
			if 'A' <= name[i] && name[i] <= 'Z' {
				return false
			}
		}
	}
	return true
}

// addHeader lower-cases the name and joins repeats with commas, as Envoy does.
func addHeader(headers map[string]string, name, value string) {
	name = strings.ToLower(name)
	if prev, ok := headers[name]; ok {
		headers[name] = prev + "," + value
		return
	}
	headers[name] = value
}
