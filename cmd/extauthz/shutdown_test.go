package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/authgate/authgate/internal/testenv"
)

// TestShutdownDrainsBeforeItStops: shutdown reports NOT_SERVING at once, on the gRPC health service Envoy's health check
// reads and on /readyz, keeps answering Checks for SHUTDOWN_DRAIN_DELAY, on the connection a proxy already holds and on new
// ones, and only then stops accepting them. So Envoy has dropped the replica before it refuses a Check.
func TestShutdownDrainsBeforeItStops(t *testing.T) {
	const drain = 5 * time.Second
	w := newWorld(t)
	srv := w.start(map[string]string{"SHUTDOWN_DRAIN_DELAY": drain.String()})
	ada, _ := w.accountToken(accountActive, "ada@example.com")

	held := dialExtauthz(t, srv.app.GRPCAddr())
	health := healthpb.NewHealthClient(held)
	if st, err := healthStatus(health); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("before shutdown: health %v, %v", st, err)
	}
	if code := readyz(t, srv.app.AdminAddr()); code != http.StatusOK {
		t.Fatalf("before shutdown: /readyz %d", code)
	}
	checkAllowed(t, "before shutdown", held, ada)

	begun := time.Now()
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain+10*time.Second)
		defer cancel()
		stopped <- srv.app.Shutdown(ctx)
	}()

	testenv.Eventually(t, drain, "health NOT_SERVING", func() bool {
		st, err := healthStatus(health)
		return err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if code := readyz(t, srv.app.AdminAddr()); code != http.StatusServiceUnavailable {
		t.Errorf("draining: /readyz %d, want 503", code)
	}
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned (%v) as soon as it reported NOT_SERVING", err)
	default:
	}
	// Not serving, yet answering: the connection Envoy holds still takes Checks, and so does a new one (a proxy that has
	// not noticed yet may open one).
	checkAllowed(t, "draining, held connection", held, ada)
	checkAllowed(t, "draining, new connection", dialExtauthz(t, srv.app.GRPCAddr()), ada)

	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(drain + 10*time.Second):
		t.Fatal("shutdown did not return after the drain delay")
	}
	if took := time.Since(begun); took < drain {
		t.Errorf("shutdown took %v, less than SHUTDOWN_DRAIN_DELAY %v", took, drain)
	}
	// Then it stops accepting.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(dialExtauthz(t, srv.app.GRPCAddr())).Check(ctx,
		checkRequest("GET", "/openapi/v1/me", bearer(ada))); err == nil {
		t.Error("a stopped server answered a Check on a new connection")
	}
}

func dialExtauthz(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// healthStatus is the overall ("" service) status, the one envoy.yaml's grpc_health_check asks for.
func healthStatus(c healthpb.HealthClient) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), err
}

func readyz(t *testing.T, adminAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func checkAllowed(t *testing.T, when string, conn *grpc.ClientConn, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest("GET", "/openapi/v1/me", bearer(token)))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("%s: Check = %v, %v; want an allow", when, resp, err)
	}
}
