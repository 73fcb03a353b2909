package deviceflow

import (
	"context"
)

// Audit events (docs/operations.md). Their attributes never carry a token, device code, cookie or assertion in clear: tokens and
// device codes appear as their SHA-256 hashes at most.
const (
	auditDeviceCodeIssued = "oauth.device_code_issued"
	auditDeviceApproved   = "oauth.device_approved"
	auditDeviceDenied     = "oauth.device_denied"
	auditTokenMinted      = "oauth.token_minted"
	auditTokenRotated     = "oauth.token_rotated"
	auditTokenRevoked     = "oauth.token_revoked"
	auditTokenExpired     = "oauth.token_expired"
	auditCrossIPPoll      = "oauth.device_code_cross_ip_poll"
	auditFlowRejected     = "oauth.device_flow_rejected"
)

// audit writes one audit event as a structured log line.
func (s *Server) audit(ctx context.Context, event string, attrs ...any) {
	s.log.InfoContext(ctx, event, append([]any{"audit", true, "event", event}, attrs...)...)
}
