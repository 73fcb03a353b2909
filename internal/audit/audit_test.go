package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestLogWritesTheOneSchema(t *testing.T) {
	var buf bytes.Buffer
	Log(context.Background(), slog.New(slog.NewJSONHandler(&buf, nil)), TokenExpired, "token_id", "t1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["msg"] != "oauth.token_expired" || line["event"] != "oauth.token_expired" || line["audit"] != true ||
		line["token_id"] != "t1" || line["level"] != "INFO" {
		t.Fatalf("audit line %v", line)
	}
}
