package extauthz

import (
	"context"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// NewGRPCServer returns a gRPC server whose codec reads and writes Check messages with the wire mapping of
// decodeCheckRequest and appendCheckResponse; every other message (health, reflection) goes through gRPC's proto codec.
// Register the Server on it with Register.
func NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.ForceServerCodecV2(codec{fallback: encoding.GetCodecV2(proto.Name)}))...)
}

// Register serves s as envoy.service.auth.v3.Authorization on g, which must come from NewGRPCServer.
func (s *Server) Register(g *grpc.Server) {
	g.RegisterService(&authorizationService, s)
}

// authorizationService is authv3.Authorization_ServiceDesc with a handler that hands the codec its own request and
// response types instead of the generated messages.
var authorizationService = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*interface {
		check(ctx context.Context, in checkRequest) *checkResponse
	})(nil),
	Methods:  []grpc.MethodDesc{{MethodName: "Check", Handler: handleCheck}},
	Metadata: authv3.Authorization_ServiceDesc.Metadata,
}

func handleCheck(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Server)
	var in checkRequest
	if err := dec(&in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return s.check(ctx, in), nil
	}
	info := &grpc.UnaryServerInfo{Server: s, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, &in, info, func(ctx context.Context, req any) (any, error) {
		return s.check(ctx, *req.(*checkRequest)), nil
	})
}

type codec struct{ fallback encoding.CodecV2 }

// Name is "proto": on the wire the Check messages are ordinary application/grpc+proto.
func (codec) Name() string { return proto.Name }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*checkResponse); ok {
		return mem.BufferSlice{mem.SliceBuffer(appendCheckResponse(make([]byte, 0, 1024), r.d))}, nil
	}
	return c.fallback.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*checkRequest)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData() // decodeCheckRequest copies what it keeps
	} else {
		b = data.Materialize()
	}
	req, err := decodeCheckRequest(b)
	if err != nil {
		return fmt.Errorf("decoding CheckRequest: %w", err)
	}
	*r = req
	return nil
}
