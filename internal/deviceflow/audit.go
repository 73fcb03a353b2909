package deviceflow

import (
	"context"

	"github.com/authgate/authgate/internal/audit"
)

// deviceflow's audit events, by their names in package audit.
const (
	auditDeviceCodeIssued = audit.DeviceCodeIssued
	auditDeviceApproved   = audit.DeviceApproved
	auditDeviceDenied     = audit.DeviceDenied
	auditTokenMinted      = audit.TokenMinted
	auditTokenRotated     = audit.TokenRotated
	auditTokenRevoked     = audit.TokenRevoked
	auditTokenExpired     = audit.TokenExpired
	auditCrossIPPoll      = audit.DeviceCodeCrossIP
	auditFlowRejected     = audit.DeviceFlowRejected
)

func (s *Server) audit(ctx context.Context, event audit.Event, attrs ...any) {
	audit.Log(ctx, s.log, event, attrs...)
}
