package deviceflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/internal/tokens"
)

// Status is where a device authorization stands.
type Status string

const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusDenied   Status = "denied"
)

var (
	// ErrUnknownCode: no pending authorization has this user code (never issued, expired, or consumed).
	ErrUnknownCode = errors.New("deviceflow: unknown or expired code")
	// ErrAlreadyResolved: the authorization was already approved or denied.
	ErrAlreadyResolved = errors.New("deviceflow: authorization already resolved")
	// errUserCodeTaken: the user code belongs to another live authorization; the caller draws another.
	errUserCodeTaken = errors.New("deviceflow: user code taken")
)

// resolvedMinTTL keeps an approval or denial readable by the next poll even when the code was about to expire.
const resolvedMinTTL = 60 * time.Second

// Authorization is one device authorization as stored in Redis.
type Authorization struct {
	DeviceCodeHash string
	UserCode       string
	ClientID       string
	DeviceLabel    string
	CreatorIP      string
	Status         Status
	Interval       time.Duration
	CreatedAt      time.Time
	ExpiresAt      time.Time
	// Subject is who approved or denied; zero while pending.
	Subject tokens.Subject
}

// State keeps device authorizations in Redis. The two keys of one authorization share a hash tag (one of 16), so every
// script touches a single cluster slot: the tag is the first hex digit of the device code's hash, and user codes are drawn
// until theirs matches.
type State struct {
	rdb redis.UniversalClient
}

// NewState returns the state over rdb.
func NewState(rdb redis.UniversalClient) *State { return &State{rdb: rdb} }

func slotOf(hexHash string) string { return "{df" + hexHash[:1] + "}" }

func deviceKey(dcHash string) string { return "device_code:" + slotOf(dcHash) + dcHash }

func userSlot(userCode string) string {
	sum := sha256.Sum256([]byte(userCode))
	return slotOf(hex.EncodeToString(sum[:1]))
}

func userKey(userCode string) string { return "user_code:" + userSlot(userCode) + userCode }

// Fields of the device_code hash.
const (
	fStatus   = "status"
	fUserCode = "user_code"
	fClient   = "client_id"
	fLabel    = "device_label"
	fIP       = "creator_ip"
	fInterval = "interval_ms"
	fCreated  = "created_ms"
	fExpires  = "expires_ms"
	fSubType  = "subject_type"
	fAccount  = "account_id"
	fEmail    = "subject_email"
	fIssuer   = "subject_issuer"
)

var putScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return 1`)

// Issue creates a pending authorization with fresh device and user codes. It returns the device code, which is stored
// only as its hash.
func (s *State) Issue(ctx context.Context, a Authorization) (deviceCode string, issued Authorization, err error) {
	deviceCode, err = newDeviceCode()
	if err != nil {
		return "", Authorization{}, err
	}
	a.DeviceCodeHash = hashDeviceCode(deviceCode)
	a.Status = StatusPending
	for range 20 {
		if a.UserCode, err = userCodeInSlot(a.DeviceCodeHash); err != nil {
			return "", Authorization{}, err
		}
		err = s.create(ctx, a)
		if !errors.Is(err, errUserCodeTaken) {
			break
		}
	}
	if err != nil {
		return "", Authorization{}, err
	}
	return deviceCode, a, nil
}

// userCodeInSlot draws user codes until one hashes to the device code's slot (16 draws on average). Rejection does not
// weaken the code: a guess still has to match one of the pending codes among 20^8.
func userCodeInSlot(dcHash string) (string, error) {
	want := slotOf(dcHash)
	for {
		code, err := newUserCode()
		if err != nil {
			return "", err
		}
		if userSlot(code) == want {
			return code, nil
		}
	}
}

func (s *State) create(ctx context.Context, a Authorization) error {
	ok, err := s.put(ctx, a, a.ExpiresAt.Sub(a.CreatedAt))
	if err == nil && !ok {
		return errUserCodeTaken
	}
	return err
}

// put writes a whole authorization unless either of its keys exists.
func (s *State) put(ctx context.Context, a Authorization, ttl time.Duration) (bool, error) {
	args := []any{ttl.Milliseconds(), a.DeviceCodeHash,
		fStatus, string(a.Status), fUserCode, a.UserCode, fClient, a.ClientID, fLabel, a.DeviceLabel, fIP, a.CreatorIP,
		fInterval, a.Interval.Milliseconds(), fCreated, a.CreatedAt.UnixMilli(), fExpires, a.ExpiresAt.UnixMilli(),
		fSubType, string(a.Subject.Type), fAccount, a.Subject.AccountID, fEmail, a.Subject.Email, fIssuer, a.Subject.Issuer}
	ok, err := putScript.Run(ctx, s.rdb, []string{deviceKey(a.DeviceCodeHash), userKey(a.UserCode)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("deviceflow: store device authorization: %w", err)
	}
	return ok == 1, nil
}

// PollOutcome is the answer to one token poll.
type PollOutcome int

const (
	PollExpired     PollOutcome = iota // unknown, expired or consumed
	PollWrongClient                    // client_id is not the code's
	PollDenied                         // the user denied
	PollApproved                       // this poll consumed the approval: mint now
	PollSlowDown                       // too soon; Authorization.Interval is the new interval
	PollPending                        // not yet decided
)

// The user_code key is built inside the script from the stored user code: it carries the same hash tag as KEYS[1], so
// the script still touches one slot.
var pollScript = redis.NewScript(`
local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then return {'expired'} end
local h = {}
for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
local now = tonumber(ARGV[2])
if h.status == 'pending' and tonumber(h.expires_ms) <= now then return {'expired'} end
if h.client_id ~= ARGV[1] then return {'wrong_client'} end
if h.status == 'denied' then return {'denied', unpack(f)} end
if h.status == 'approved' then
  redis.call('DEL', KEYS[1], ARGV[6] .. h.user_code)
  return {'approved', unpack(f)}
end
local interval = tonumber(h.interval_ms)
local last = tonumber(h.last_poll_ms)
if last and now - last < interval - tonumber(ARGV[4]) then
  if ARGV[3] == '1' then return {'slow_down', unpack(f)} end
  interval = interval + tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], 'interval_ms', interval, 'last_poll_ms', now)
  h.interval_ms = tostring(interval)
  f = {}
  for k, v in pairs(h) do f[#f + 1] = k; f[#f + 1] = v end
  return {'slow_down', unpack(f)}
end
if ARGV[3] ~= '1' then redis.call('HSET', KEYS[1], 'last_poll_ms', now) end
return {'pending', unpack(f)}`)

// Poll slack and growth (RFC 8628 §3.5): client clocks and networks jitter, so a poll up to 500 ms early still counts as
// on time; a poll earlier than that grows the interval by 5 s for this and every later poll.
const (
	pollSlack  = 500 * time.Millisecond
	pollGrowth = 5 * time.Second
)

// Poll decides one token poll atomically. viaBasic marks a poll that authenticated the client with HTTP Basic: it never
// moves the poll clock, because clients that auto-detect the auth style repeat a refused Basic poll at once without it.
func (s *State) Poll(ctx context.Context, deviceCode, clientID string, now time.Time, viaBasic bool) (PollOutcome, Authorization, error) {
	dcHash := hashDeviceCode(deviceCode)
	basic := "0"
	if viaBasic {
		basic = "1"
	}
	res, err := pollScript.Run(ctx, s.rdb, []string{deviceKey(dcHash)}, clientID, now.UnixMilli(), basic,
		pollSlack.Milliseconds(), pollGrowth.Milliseconds(), "user_code:"+slotOf(dcHash)).StringSlice()
	if err != nil {
		return 0, Authorization{}, fmt.Errorf("deviceflow: poll device code: %w", err)
	}
	a := parseAuthorization(dcHash, res[1:])
	switch res[0] {
	case "expired":
		return PollExpired, a, nil
	case "wrong_client":
		return PollWrongClient, a, nil
	case "denied":
		return PollDenied, a, nil
	case "approved":
		return PollApproved, a, nil
	case "slow_down":
		return PollSlowDown, a, nil
	case "pending":
		return PollPending, a, nil
	}
	return 0, Authorization{}, fmt.Errorf("deviceflow: poll script answered %q", res[0])
}

var resolveScript = redis.NewScript(`
local dc = redis.call('GET', KEYS[1])
if not dc then return {'unknown'} end
local dkey = ARGV[1] .. dc
local f = redis.call('HGETALL', dkey)
if #f == 0 then return {'unknown'} end
local h = {}
for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
local now = tonumber(ARGV[3])
if h.status ~= 'pending' then return {'resolved', unpack(f)} end
if tonumber(h.expires_ms) <= now then return {'unknown'} end
redis.call('HSET', dkey, 'status', ARGV[2], 'resolved_ms', now, unpack(ARGV, 5))
local ttl = math.max(tonumber(h.expires_ms) - now, tonumber(ARGV[4]))
redis.call('PEXPIRE', dkey, ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return {'ok', unpack(redis.call('HGETALL', dkey))}`)

// Resolve approves or denies the pending authorization of userCode (canonical form) for subject, by compare-and-set from
// pending: of two racing calls exactly one wins; the other gets ErrAlreadyResolved. The resolved state lives for the rest
// of the code's lifetime, and at least 60 s. It returns the authorization as resolved.
func (s *State) Resolve(ctx context.Context, userCode string, to Status, subject tokens.Subject, now time.Time) (Authorization, error) {
	if to != StatusApproved && to != StatusDenied {
		return Authorization{}, fmt.Errorf("deviceflow: resolve to %q", to)
	}
	res, err := resolveScript.Run(ctx, s.rdb, []string{userKey(userCode)}, "device_code:"+userSlot(userCode),
		string(to), now.UnixMilli(), resolvedMinTTL.Milliseconds(),
		fSubType, string(subject.Type), fAccount, subject.AccountID, fEmail, subject.Email, fIssuer, subject.Issuer).StringSlice()
	if err != nil {
		return Authorization{}, fmt.Errorf("deviceflow: resolve device code: %w", err)
	}
	switch res[0] {
	case "unknown":
		return Authorization{}, ErrUnknownCode
	case "resolved":
		return parseAuthorization("", res[1:]), ErrAlreadyResolved
	}
	return parseAuthorization("", res[1:]), nil
}

// Approve records subject as the approver of userCode; the token is minted by the poll that consumes the approval.
func (s *State) Approve(ctx context.Context, userCode string, subject tokens.Subject, now time.Time) (Authorization, error) {
	return s.Resolve(ctx, userCode, StatusApproved, subject, now)
}

// Deny records that subject refused userCode.
func (s *State) Deny(ctx context.Context, userCode string, subject tokens.Subject, now time.Time) (Authorization, error) {
	return s.Resolve(ctx, userCode, StatusDenied, subject, now)
}

var lookupScript = redis.NewScript(`
local dc = redis.call('GET', KEYS[1])
if not dc then return {} end
return redis.call('HGETALL', ARGV[1] .. dc)`)

// Lookup returns the authorization of userCode (canonical form) in any status; ErrUnknownCode when there is none.
func (s *State) Lookup(ctx context.Context, userCode string, now time.Time) (Authorization, error) {
	res, err := lookupScript.Run(ctx, s.rdb, []string{userKey(userCode)}, "device_code:"+userSlot(userCode)).StringSlice()
	if err != nil {
		return Authorization{}, fmt.Errorf("deviceflow: look up user code: %w", err)
	}
	a := parseAuthorization("", res)
	if len(res) == 0 || (a.Status == StatusPending && !now.Before(a.ExpiresAt)) {
		return Authorization{}, ErrUnknownCode
	}
	return a, nil
}

// LookupPending returns the pending authorization of userCode (canonical form); ErrUnknownCode when there is none, and
// ErrAlreadyResolved when it was approved or denied.
func (s *State) LookupPending(ctx context.Context, userCode string, now time.Time) (Authorization, error) {
	a, err := s.Lookup(ctx, userCode, now)
	if err == nil && a.Status != StatusPending {
		return a, ErrAlreadyResolved
	}
	return a, err
}

func parseAuthorization(dcHash string, kv []string) Authorization {
	h := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = kv[i+1]
	}
	ms := func(name string) int64 { n, _ := strconv.ParseInt(h[name], 10, 64); return n }
	a := Authorization{
		DeviceCodeHash: dcHash,
		UserCode:       h[fUserCode],
		ClientID:       h[fClient],
		DeviceLabel:    h[fLabel],
		CreatorIP:      h[fIP],
		Status:         Status(h[fStatus]),
		Interval:       time.Duration(ms(fInterval)) * time.Millisecond,
		CreatedAt:      time.UnixMilli(ms(fCreated)),
		ExpiresAt:      time.UnixMilli(ms(fExpires)),
	}
	if t := tokens.SubjectType(h[fSubType]); t.Valid() {
		a.Subject = tokens.Subject{Type: t, AccountID: h[fAccount], Email: h[fEmail], Issuer: h[fIssuer]}
	}
	return a
}

// Reinstate puts back an approval that a poll consumed but could not turn into a token (Postgres unavailable), so the
// client's next poll tries again instead of the user having to start over.
func (s *State) Reinstate(ctx context.Context, a Authorization, now time.Time) error {
	_, err := s.put(ctx, a, max(a.ExpiresAt.Sub(now), resolvedMinTTL))
	return err
}
