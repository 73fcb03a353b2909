package deviceflow

import (
	"net/http"
	"net/url"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	codeLifetime    = 900 * time.Second
	initialInterval = 5 * time.Second
	maxLabelRunes   = 255
)

type deviceCodeResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

// handleDeviceCode starts a device authorization (RFC 8628 §3.1–3.2).
func (s *Server) handleDeviceCode(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ip := s.clientIP(r)
	if err := s.allow(ctx, w, limitDeviceCode, s.clientBucket(r)); err != nil {
		return err
	}
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return apiErr
	}
	client, apiErr := s.knownClient(r, p)
	if apiErr != nil {
		return apiErr
	}
	label, apiErr := deviceLabel(p, client.ID)
	if apiErr != nil {
		return apiErr
	}
	now := s.now()
	deviceCode, a, err := s.state.Issue(ctx, Authorization{
		ClientID:    client.ID,
		DeviceLabel: label,
		CreatorIP:   ip.String(),
		Interval:    initialInterval,
		CreatedAt:   now,
		ExpiresAt:   now.Add(codeLifetime),
	})
	if err != nil {
		return err
	}
	s.audit(ctx, auditDeviceCodeIssued, "client_id", a.ClientID, "device_label", a.DeviceLabel,
		"device_code_hash", a.DeviceCodeHash, "client_ip", a.CreatorIP)
	verify := s.cfg.ConsoleWebURL + "/device"
	noStore(w)
	writeJSON(w, http.StatusOK, deviceCodeResponse{
		DeviceCode:              deviceCode,
		UserCode:                a.UserCode,
		VerificationURI:         verify,
		VerificationURIComplete: verify + "?user_code=" + url.QueryEscape(a.UserCode),
		ExpiresIn:               int(codeLifetime / time.Second),
		Interval:                int(initialInterval / time.Second),
	})
	return nil
}

// deviceLabel names the device in session listings: 1–255 printable characters, no control or bidi characters (which
// could disguise a label on the approval page). Absent means "<client_id> device".
func deviceLabel(p params, clientID string) (string, *apiError) {
	if !p.has("device_label") {
		return clientID + " device", nil
	}
	label, apiErr := p.str("device_label")
	if apiErr != nil {
		return "", apiErr
	}
	if !validLabel(label) {
		return "", errorf(http.StatusBadRequest, codeInvalidRequest,
			"device_label must be 1-255 printable characters without control or bidirectional characters")
	}
	return label, nil
}

func validLabel(label string) bool {
	n := utf8.RuneCountInString(label)
	if n < 1 || n > maxLabelRunes || !utf8.ValidString(label) {
		return false
	}
	for _, r := range label {
		if !unicode.IsPrint(r) || unicode.Is(unicode.Bidi_Control, r) {
			return false
		}
	}
	return true
}
