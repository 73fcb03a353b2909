package tokens

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type fakeExpirer struct {
	hit   bool
	err   error
	calls []string
}

func (f *fakeExpirer) HardExpire(_ context.Context, id string, _ time.Time) (bool, error) {
	f.calls = append(f.calls, id)
	return f.hit, f.err
}

func TestHardExpireAuditsOnlyTheHit(t *testing.T) {
	tok := Token{ID: "t1", ClientID: "difyctl", SubjectEmail: "ada@example.com", SubjectIssuer: "dify:account", AccountID: "a1"}
	for _, tc := range []struct {
		name    string
		store   *fakeExpirer
		wantHit bool
		events  int
	}{
		{"hit", &fakeExpirer{hit: true}, true, 1},
		{"lost the race", &fakeExpirer{}, false, 0},
		{"store error", &fakeExpirer{hit: true, err: errors.New("down")}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			hit, err := HardExpire(context.Background(), tc.store, slog.New(slog.NewJSONHandler(&buf, nil)), tok, time.Now())
			if hit != tc.wantHit || (err != nil) != (tc.store.err != nil) {
				t.Fatalf("HardExpire = %v, %v", hit, err)
			}
			if len(tc.store.calls) != 1 || tc.store.calls[0] != "t1" {
				t.Fatalf("store calls %v, want one for t1", tc.store.calls)
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if buf.Len() == 0 {
				lines = nil
			}
			if len(lines) != tc.events {
				t.Fatalf("%d log lines, want %d: %s", len(lines), tc.events, buf.String())
			}
			if tc.events == 0 {
				return
			}
			var ev map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
				t.Fatal(err)
			}
			for k, v := range map[string]any{"event": "oauth.token_expired", "audit": true, "token_id": "t1", "client_id": "difyctl",
				"subject_email": "ada@example.com", "subject_issuer": "dify:account", "account_id": "a1"} {
				if ev[k] != v {
					t.Errorf("%s = %v, want %v", k, ev[k], v)
				}
			}
		})
	}
}
