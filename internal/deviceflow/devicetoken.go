package deviceflow

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/authgate/authgate/internal/tokens"
)

const deviceCodeGrant = "urn:ietf:params:oauth:grant-type:device_code"

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	// Token repeats AccessToken: Dify's CLI reads this name.
	Token         string    `json:"token"`
	ExpiresAt     time.Time `json:"expires_at"`
	TokenID       string    `json:"token_id"`
	SubjectType   string    `json:"subject_type"`
	SubjectEmail  string    `json:"subject_email"`
	SubjectIssuer string    `json:"subject_issuer"`
	profile
}

// handleDeviceToken answers a token poll (RFC 8628 §3.4–3.5) in the order SPEC §4 fixes.
func (s *Server) handleDeviceToken(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	noStore(w)
	p, apiErr := decodeBody(w, r)
	if apiErr != nil {
		return apiErr
	}
	grant, apiErr := p.str("grant_type")
	if apiErr != nil {
		return apiErr
	}
	switch {
	case grant == "" && p.form:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "grant_type is required")
	case grant != "" && grant != deviceCodeGrant:
		return errorf(http.StatusBadRequest, codeUnsupportedGrantType, "only the device_code grant is supported")
	}
	deviceCode, apiErr := p.str("device_code")
	if apiErr != nil {
		return apiErr
	}
	if deviceCode == "" {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "device_code is required")
	}
	client, apiErr := clientFrom(r, p)
	if apiErr != nil {
		return apiErr
	}
	if client.ID == "" {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "client_id is required")
	}
	if len(deviceCode) > 128 {
		return expiredToken()
	}

	now := s.now()
	outcome, a, err := s.state.Poll(ctx, deviceCode, client.ID, now, client.ViaBasic)
	if err != nil {
		return err
	}
	ip := s.clientIP(r).String()
	if outcome != PollExpired && a.CreatorIP != "" && a.CreatorIP != ip {
		s.audit(ctx, auditCrossIPPoll, "client_id", a.ClientID, "device_code_hash", a.DeviceCodeHash,
			"creator_ip", a.CreatorIP, "client_ip", ip)
	}
	switch outcome {
	case PollExpired:
		return expiredToken()
	case PollWrongClient:
		return errorf(http.StatusBadRequest, codeInvalidGrant, "the device code was issued to another client")
	case PollDenied:
		return errorf(http.StatusBadRequest, codeAccessDenied, "the user denied the authorization")
	case PollPending:
		return errorf(http.StatusBadRequest, codeAuthorizationPending, "the user has not approved yet")
	case PollSlowDown:
		return errorf(http.StatusBadRequest, codeSlowDown,
			"polling too fast; wait "+strconv.Itoa(int(a.Interval/time.Second))+" s between polls")
	}
	resp, err := s.mint(ctx, a, now)
	if errors.Is(err, errAccountGone) {
		s.audit(ctx, auditFlowRejected, "reason", "account_inactive", "client_id", a.ClientID, "account_id", a.Subject.AccountID)
		return errorf(http.StatusBadRequest, codeAccessDenied, "the approving account is no longer active")
	}
	if err != nil {
		if rerr := s.state.Reinstate(ctx, a, now); rerr != nil {
			s.log.ErrorContext(ctx, "deviceflow: an approval was lost to a failed mint", "device_code_hash", a.DeviceCodeHash, "err", rerr)
		}
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func expiredToken() *apiError {
	return errorf(http.StatusBadRequest, codeExpiredToken, "the device code is unknown, expired or already used")
}

// mint issues the token of a consumed approval, rotating the device's previous token in place. The plaintext exists only
// in the returned response.
func (s *Server) mint(ctx context.Context, a Authorization, now time.Time) (tokenResponse, error) {
	kind, ok := tokens.KindForSubject(a.Subject.Type)
	if !ok {
		return tokenResponse{}, errors.New("deviceflow: approval without a valid subject")
	}
	prof, err := s.profileOf(ctx, a.Subject)
	if err != nil {
		return tokenResponse{}, err
	}
	plaintext, err := tokens.Generate(kind)
	if err != nil {
		return tokenResponse{}, err
	}
	minted, err := s.deps.Tokens.Mint(ctx, tokens.MintRequest{
		Subject:     a.Subject,
		ClientID:    a.ClientID,
		DeviceLabel: a.DeviceLabel,
		Prefix:      kind.Prefix,
		TokenHash:   tokens.Hash(plaintext),
		Now:         now,
		ExpiresAt:   s.cfg.TTL.ExpiresAt(now),
	})
	if err != nil {
		return tokenResponse{}, err
	}
	t := minted.Token
	attrs := []any{"token_id", t.ID, "client_id", t.ClientID, "device_label", t.DeviceLabel, "subject_type", string(a.Subject.Type),
		"subject_email", t.SubjectEmail, "subject_issuer", t.SubjectIssuer, "account_id", t.AccountID}
	if minted.RotatedHash != "" {
		// The row is already rotated in Postgres; the tombstone stops caches from serving the old token meanwhile.
		if err := s.deps.Revoker.Revoke(ctx, minted.RotatedHash); err != nil {
			s.log.ErrorContext(ctx, "deviceflow: publishing the revocation of a rotated token failed", "token_id", t.ID, "err", err)
		}
		s.audit(ctx, auditTokenRotated, attrs...)
	}
	s.audit(ctx, auditTokenMinted, attrs...)
	return tokenResponse{
		AccessToken:   plaintext,
		TokenType:     "Bearer",
		ExpiresIn:     int64(math.Round(t.ExpiresAt.Sub(now).Seconds())), // Postgres keeps microseconds
		Token:         plaintext,
		ExpiresAt:     t.ExpiresAt.UTC(),
		TokenID:       t.ID,
		SubjectType:   string(a.Subject.Type),
		SubjectEmail:  t.SubjectEmail,
		SubjectIssuer: t.SubjectIssuer,
		profile:       prof,
	}, nil
}
