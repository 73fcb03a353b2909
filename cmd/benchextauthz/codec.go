package main

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec sends pre-encoded requests as they are and reads only what the load generator needs from a response (is it an
// allow?), so the client's cost per Check is a copy onto the wire and a short scan, the same for both servers. Its name is
// "proto": on the wire this is ordinary application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*request)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	// SliceBuffer's Free is a no-op, so the one encoding is shared by every send of this request. A request with a random
	// bearer is a worker's own copy, changed only after the previous send was answered.
	return mem.BufferSlice{mem.SliceBuffer(r.raw)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*checkResult)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		b = data.Materialize()
	}
	return r.scan(b)
}

// checkResult is what the load generator learns from a CheckResponse. The bytes are kept (copied: gRPC frees them after
// Unmarshal) only for denies, to print them, or when keepRaw asks for every response, in the verification pass.
type checkResult struct {
	keepRaw bool
	expect  expectation // a deny it accepts is not copied
	allowed bool
	code    int64 // the rpc status code
	raw     []byte
}

// CheckResponse fields (envoy.service.auth.v3): 1 status (google.rpc.Status, whose field 1 is the code), 3 ok_response.
const (
	fieldStatus     = 1
	fieldOkResponse = 3
	fieldStatusCode = 1
)

func (r *checkResult) scan(b []byte) error {
	code, ok := int64(0), false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return protowire.ParseError(n)
		}
		rest = rest[n:]
		if typ == protowire.BytesType && (num == fieldStatus || num == fieldOkResponse) {
			v, m := protowire.ConsumeBytes(rest)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if num == fieldOkResponse {
				ok = true
			} else {
				c, err := statusCode(v)
				if err != nil {
					return err
				}
				code = c
			}
			rest = rest[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, rest)
		if m < 0 {
			return protowire.ParseError(m)
		}
		rest = rest[m:]
	}
	r.allowed, r.code = ok && code == 0, code
	if r.keepRaw || (!r.allowed && !r.expect.accepts(code)) {
		r.raw = append([]byte(nil), b...)
	}
	return nil
}

func statusCode(b []byte) (int64, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		b = b[n:]
		if num == fieldStatusCode && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return 0, protowire.ParseError(m)
			}
			return int64(int32(v)), nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0, protowire.ParseError(m)
		}
		b = b[m:]
	}
	return 0, nil
}
