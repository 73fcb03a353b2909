package envoyshim_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/authgate/authgate/internal/envoyshim"
)

func TestTraceContextReachesCheck(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })

	parents := make(chan string, 1)
	authz := &authzServer{decide: func(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		parents <- strings.Join(md.Get("traceparent"), ",")
		return allow()(ctx, req)
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, authz)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(otelgrpc.NewClientHandler()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	up := startUpstream(t)
	shim := startShim(t, envoyshim.Config{
		Authz:  authv3.NewAuthorizationClient(conn),
		Routes: []envoyshim.Route{{Prefix: "/", Upstream: up.url(t)}},
	})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := newRequest(t, http.MethodGet, shim.URL+"/x")
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if resp, _ := do(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if got := <-parents; !strings.Contains(got, traceID) {
		t.Fatalf("Check carried traceparent %q, want trace %s", got, traceID)
	}
}
