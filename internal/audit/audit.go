// Package audit is the one way authgate writes audit events: a structured log line whose message and "event" attribute are
// the event's name and whose "audit" attribute is true, so one log query (audit=true) finds the events of both services.
// Attributes never carry a token, device code, cookie or assertion in clear; tokens and device codes appear as their
// SHA-256 hashes at most. docs/operations.md lists the events and their attributes.
package audit

import (
	"context"
	"log/slog"
)

// Event names an audit event.
type Event string

const (
	DeviceCodeIssued   Event = "oauth.device_code_issued"
	DeviceApproved     Event = "oauth.device_approved"
	DeviceDenied       Event = "oauth.device_denied"
	TokenMinted        Event = "oauth.token_minted"
	TokenRotated       Event = "oauth.token_rotated"
	TokenRevoked       Event = "oauth.token_revoked"
	TokenExpired       Event = "oauth.token_expired"
	DeviceCodeCrossIP  Event = "oauth.device_code_cross_ip_poll"
	DeviceFlowRejected Event = "oauth.device_flow_rejected"
)

// Log writes one audit event at info level.
func Log(ctx context.Context, logger *slog.Logger, event Event, attrs ...any) {
	logger.InfoContext(ctx, string(event), append([]any{"audit", true, "event", string(event)}, attrs...)...)
}
