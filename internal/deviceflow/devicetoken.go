package deviceflow

import (
	"context"
	"errors"
	"log/slog"
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

// handleDeviceToken answers a token poll (RFC 8628 §3.4–3.5). Decision order: unknown, expired or consumed; then the
// client; then denied; then approved (claimed by this poll, or held by another poll's live claim: pending); then pending.
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
	if outcome != PollExpired && outcome != PollLost && a.CreatorIP != "" && a.CreatorIP != ip {
		s.audit(ctx, auditCrossIPPoll, "client_id", a.ClientID, "device_code_hash", a.DeviceCodeHash,
			"creator_ip", a.CreatorIP, "client_ip", ip)
	}
	switch outcome {
	case PollExpired:
		return expiredToken()
	case PollLost:
		s.metrics.deviceStateLost(ctx)
		s.throttle.Log(ctx, s.log, slog.LevelWarn, "device-state-lost",
			"deviceflow: a token poll for a code Redis does not know, while Redis's device-flow state is younger than a code's "+
				"lifetime: Redis probably lost its data (restart without persistence, failover); pending logins must start again",
			"device_code_hash", a.DeviceCodeHash)
		return errorf(http.StatusBadRequest, codeExpiredToken,
			"the server lost the state of this login (a restart); start a new login")
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
	return s.deliver(ctx, w, a, now)
}

// deliver turns this poll's claim on an approval into a token: mint (rotating the device's row in place), complete the claim,
// and only then answer with the token. Whatever fails before the completion, the approval stays claimable and the client's
// next poll mints again, rotating the undelivered token away: exactly one token is delivered, and at most one is live.
func (s *Server) deliver(ctx context.Context, w http.ResponseWriter, a Authorization, now time.Time) error {
	resp, rotated, err := s.mint(ctx, a, now)
	if errors.Is(err, errAccountGone) {
		s.release(ctx, a)
		s.audit(ctx, auditFlowRejected, "reason", "account_inactive", "client_id", a.ClientID, "account_id", a.Subject.AccountID)
		return errorf(http.StatusBadRequest, codeAccessDenied, "the approving account is no longer active")
	}
	if errors.Is(err, tokens.ErrDeviceTaken) {
		// Another Dify account whose email differs only in letter case holds this device label's token: it keeps it.
		s.release(ctx, a)
		s.audit(ctx, auditFlowRejected, "reason", "device_label_taken", "client_id", a.ClientID, "device_label", a.DeviceLabel,
			"account_id", a.Subject.AccountID, "subject_email", a.Subject.Email)
		return errorf(http.StatusBadRequest, codeAccessDenied, "another account with this email address (in other letter "+
			"case) already has a token for this device label; log in again with another device label")
	}
	if err != nil {
		s.release(ctx, a)
		return err
	}
	if rotated != "" {
		// The row is already rotated in Postgres (which recorded the old hash, so extauthz's reconcilers deny it anyway);
		// the tombstone stops caches at once. Unlike a revocation endpoint's publish this one stays within the request's
		// budget: the poll must still complete its claim, and answer within it.
		if err := s.deps.Revoker.Revoke(ctx, rotated); err != nil {
			s.throttle.Log(ctx, s.log, slog.LevelWarn, "publish-revocation",
				"deviceflow: publishing a revocation to Redis failed; extauthz reconciles it from Postgres",
				"token_id", resp.TokenID, "err", err)
		}
	}
	if err := s.state.Complete(ctx, a); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// release hands the approval back at once after a failed mint. Failing to is harmless (the claim lapses by the time the
// client's Retry-After has passed), so it is not an error for the client, and it is not tried once the request's budget is
// spent.
func (s *Server) release(ctx context.Context, a Authorization) {
	if ctx.Err() != nil {
		return
	}
	if err := s.state.Release(ctx, a); err != nil {
		s.throttle.Log(ctx, s.log, slog.LevelWarn, "release-claim", "deviceflow: releasing a claim failed; it lapses by itself",
			"device_code_hash", a.DeviceCodeHash, "err", err)
	}
}

func expiredToken() *apiError {
	return errorf(http.StatusBadRequest, codeExpiredToken, "the device code is unknown, expired or already used")
}

// mint issues the token of a claimed approval, rotating the device's previous token in place, and returns the hash it
// rotated away ("" for a new row). The plaintext exists only in the returned response.
func (s *Server) mint(ctx context.Context, a Authorization, now time.Time) (tokenResponse, string, error) {
	kind, ok := tokens.KindForSubject(a.Subject.Type)
	if !ok {
		return tokenResponse{}, "", errors.New("deviceflow: approval without a valid subject")
	}
	prof, err := s.profileOf(ctx, a.Subject)
	if err != nil {
		return tokenResponse{}, "", err
	}
	plaintext, err := tokens.Generate(kind)
	if err != nil {
		return tokenResponse{}, "", err
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
		return tokenResponse{}, "", err
	}
	t := minted.Token
	attrs := []any{"token_id", t.ID, "client_id", t.ClientID, "device_label", t.DeviceLabel, "subject_type", string(a.Subject.Type),
		"subject_email", t.SubjectEmail, "subject_issuer", t.SubjectIssuer, "account_id", t.AccountID}
	if minted.RotatedHash != "" {
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
	}, minted.RotatedHash, nil
}
