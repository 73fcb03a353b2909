package pipeline

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestUnauthenticatedAllowsStripAuthorization: with FORWARD_AUTHORIZATION=false the upstream never gets an Authorization
// header through an allow, also where no bearer was checked: a CORS preflight (allowed unauthenticated whatever it carries)
// and an auth: none route. With the default (true) such allows leave the header alone.
func TestUnauthenticatedAllowsStripAuthorization(t *testing.T) {
	requests := map[string]Request{
		"preflight of a bearer route": {Method: "OPTIONS", Path: "/openapi/v1/apps?workspace_id=x", Headers: map[string]string{
			"origin": "https://evil.example", "access-control-request-method": "GET", "authorization": "Bearer dfoa_forged"}},
		"auth: none route": {Method: "GET", Path: "/openapi/v1/_health",
			Headers: map[string]string{"authorization": "Bearer dfoa_forged"}},
	}
	for _, forward := range []bool{false, true} {
		p, err := New(mustDefault(t), Options{EnableOAuthBearer: true, CheckTimeout: time.Second, ForwardAuthorization: forward}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		for name, req := range requests {
			d := p.Check(context.Background(), req)
			if !d.Allow {
				t.Fatalf("%s: denied %d %s", name, d.Status, d.Code)
			}
			if removed := slices.Contains(d.RemoveHeaders, "authorization"); removed == forward {
				t.Errorf("FORWARD_AUTHORIZATION=%v, %s: authorization removed = %v, headers to remove %v", forward, name,
					removed, d.RemoveHeaders)
			}
		}
	}
}
