package deviceflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	// StatusConsumed: the approval was turned into a token and delivered; the hash stays until the code would have expired,
	// so later polls get expired_token.
	StatusConsumed Status = "consumed"
)

var (
	// ErrUnknownCode: no pending authorization has this user code (never issued, expired, or consumed).
	ErrUnknownCode = errors.New("deviceflow: unknown or expired code")
	// ErrAlreadyResolved: the authorization was already approved or denied.
	ErrAlreadyResolved = errors.New("deviceflow: authorization already resolved")
	// errUserCodeTaken: the user code belongs to another live authorization; the caller draws another.
	errUserCodeTaken = errors.New("deviceflow: user code taken")
	// errClaimLost: the approval is no longer this poll's claim (its lease lapsed and another poll claimed it, or the code is
	// gone); this poll must not deliver its token.
	errClaimLost = errors.New("deviceflow: the approval is no longer claimed by this poll")
	// errClaimLate: the completion reached Redis too late for its reply to be awaited; the approval stays claimable.
	errClaimLate = errors.New("deviceflow: the claim's completion arrived after its poll gave up")
)

// resolvedMinTTL keeps an approval or denial readable by the next poll even when the code was about to expire.
const resolvedMinTTL = 60 * time.Second

// Claims. A poll that finds an approval claims it for claimLease instead of deleting it, mints, and then completes the claim;
// a poll that fails in between leaves the claim to lapse, and the approval is claimable again. The lease must outlast
// everything the claiming poll can still do: its dependency budget (requestBudget) bounds its Postgres mint, so once the lease
// has run out the claimer can no longer change the token row, and a new claimer's mint is the last one.
const (
	claimLease = 5 * time.Second
	// replyMargin is the time left for a completion's reply to travel back: a completion that runs later than this before
	// its poll gives up is refused (see Complete).
	replyMargin = 200 * time.Millisecond
	// redisCallTimeout bounds one Redis call of a request; the request's own budget may cut it shorter.
	redisCallTimeout = time.Second
)

// redisCall bounds one Redis call. A Redis that hangs is then one second of a request, not all of it.
func redisCall(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, redisCallTimeout)
}

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
	// Claim is set by the poll that claimed the approval (PollApproved): the poll hands it to Complete or Release.
	Claim Claim
}

// Claim is one poll's lease on an approval.
type Claim struct {
	ID string
	// redisAt is Redis's clock (ms) when the claim was made, and seenAt the local (monotonic) time its reply arrived: together
	// they translate this process's deadlines into Redis's clock without comparing the two machines' wall clocks.
	redisAt int64
	seenAt  time.Time
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

// epochKey records, per hash tag, when this Redis first held a device authorization (ms of the issuing server's clock). It is
// never expired: a Redis that lost its data (restarted without persistence, flushed) has none, or a young one, which tells a
// poll for a missing code that the code may have been lost rather than used or expired.
func epochKey(dcHash string) string { return "device_state_epoch:" + slotOf(dcHash) }

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
	// fClaimID and fClaimUntil: the poll holding the approval and until when (Redis's clock, ms).
	fClaimID    = "claim_id"
	fClaimUntil = "claim_until_ms"
)

// putScript writes a new authorization unless either key exists, and notes the epoch of the slot if it has none.
var putScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
redis.call('SET', KEYS[3], ARGV[3], 'NX')
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

// create writes a new pending authorization unless either of its keys exists (errUserCodeTaken).
func (s *State) create(ctx context.Context, a Authorization) error {
	args := []any{a.ExpiresAt.Sub(a.CreatedAt).Milliseconds(), a.DeviceCodeHash, a.CreatedAt.UnixMilli(),
		fStatus, string(a.Status), fUserCode, a.UserCode, fClient, a.ClientID, fLabel, a.DeviceLabel, fIP, a.CreatorIP,
		fInterval, a.Interval.Milliseconds(), fCreated, a.CreatedAt.UnixMilli(), fExpires, a.ExpiresAt.UnixMilli()}
	ctx, cancel := redisCall(ctx)
	defer cancel()
	ok, err := putScript.Run(ctx, s.rdb, []string{deviceKey(a.DeviceCodeHash), userKey(a.UserCode), epochKey(a.DeviceCodeHash)},
		args...).Int()
	if err != nil {
		return redisFailure("store device authorization", err)
	}
	if ok != 1 {
		return errUserCodeTaken
	}
	return nil
}

// PollOutcome is the answer to one token poll.
type PollOutcome int

const (
	PollExpired     PollOutcome = iota // unknown, expired or consumed
	PollWrongClient                    // client_id is not the code's
	PollDenied                         // the user denied
	PollApproved                       // this poll claimed the approval (Authorization.Claim): mint, then Complete
	PollSlowDown                       // too soon; Authorization.Interval is the new interval
	PollPending                        // not yet decided, or another poll holds a live claim on the approval
	PollLost                           // no such code, and Redis lost its device-flow state within a code's lifetime
)

// pollScript decides a poll. A missing code returns the slot's epoch, so the caller can tell "used or expired" from "lost".
// An approval is claimed, never deleted: the claim (id and lease end, on Redis's clock) goes into the hash, and while it is
// live other polls are told to keep waiting. A claim that runs late (its poll already gave up) only delays the approval by
// one lease.
//
// KEYS[1] device key, KEYS[2] epoch key; ARGV: client id, now (ms), via Basic (1/0), slack (ms), growth (ms), claim id,
// lease (ms).
var pollScript = redis.NewScript(`
local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then return {'missing', redis.call('GET', KEYS[2]) or ''} end
local h = {}
for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
local now = tonumber(ARGV[2])
if h.status == 'consumed' then return {'expired'} end
if h.status == 'pending' and tonumber(h.expires_ms) <= now then return {'expired'} end
if h.client_id ~= ARGV[1] then return {'wrong_client'} end
if h.status == 'denied' then return {'denied', unpack(f)} end
if h.status == 'approved' then
  local t = redis.call('TIME')
  local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if h.claim_id and tonumber(h.claim_until_ms) > rnow then return {'claimed', unpack(f)} end
  redis.call('HSET', KEYS[1], 'claim_id', ARGV[6], 'claim_until_ms', rnow + tonumber(ARGV[7]))
  return {'approved', tostring(rnow), unpack(f)}
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
// PollApproved hands the caller a claim on the approval (Authorization.Claim), to Complete once the token is minted or to
// Release if it cannot be.
func (s *State) Poll(ctx context.Context, deviceCode, clientID string, now time.Time, viaBasic bool) (PollOutcome, Authorization, error) {
	dcHash := hashDeviceCode(deviceCode)
	basic := "0"
	if viaBasic {
		basic = "1"
	}
	claimID := newClaimID()
	ctx, cancel := redisCall(ctx)
	defer cancel()
	res, err := pollScript.Run(ctx, s.rdb, []string{deviceKey(dcHash), epochKey(dcHash)}, clientID, now.UnixMilli(), basic,
		pollSlack.Milliseconds(), pollGrowth.Milliseconds(), claimID, claimLease.Milliseconds()).StringSlice()
	seen := time.Now()
	if err != nil {
		return 0, Authorization{}, redisFailure("poll device code", err)
	}
	if len(res) == 0 {
		return 0, Authorization{}, redisFailure("poll device code", errors.New("empty script reply"))
	}
	switch res[0] {
	case "missing":
		if stateLost(res[1], now) {
			return PollLost, Authorization{DeviceCodeHash: dcHash}, nil
		}
		return PollExpired, Authorization{DeviceCodeHash: dcHash}, nil
	case "expired":
		return PollExpired, Authorization{DeviceCodeHash: dcHash}, nil
	case "wrong_client":
		return PollWrongClient, Authorization{DeviceCodeHash: dcHash}, nil
	case "approved":
		redisAt, _ := strconv.ParseInt(res[1], 10, 64)
		a := parseAuthorization(dcHash, res[2:])
		a.Claim = Claim{ID: claimID, redisAt: redisAt, seenAt: seen}
		return PollApproved, a, nil
	}
	a := parseAuthorization(dcHash, res[1:])
	switch res[0] {
	case "denied":
		return PollDenied, a, nil
	case "slow_down":
		return PollSlowDown, a, nil
	case "pending", "claimed":
		return PollPending, a, nil
	}
	return 0, Authorization{}, redisFailure("poll device code", fmt.Errorf("script answered %q", res[0]))
}

// stateLost tells a code that Redis lost from one that was used or expired: the slot has no epoch (Redis lost everything since
// the last code was issued there), or its epoch is younger than a code's lifetime (a code issued before the loss could still be
// within its lifetime). The only false alarms are polls with never-issued codes in the first 15 minutes of a slot's epoch.
func stateLost(epoch string, now time.Time) bool {
	ms, err := strconv.ParseInt(epoch, 10, 64)
	return err != nil || now.Sub(time.UnixMilli(ms)) < codeLifetime
}

func newClaimID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// completeScript turns a claimed approval into a consumed one: compare-and-set on the claim id, so it is safe to run twice
// (the second run finds its own claim consumed and answers ok) and safe to run late: a run after ARGV[2] (Redis's clock,
// ms), when its poll can no longer be waiting for the reply, releases the claim instead of consuming the approval. The hash
// stays, as a consumed marker, until the code would have expired; the user_code key goes at once.
//
// KEYS[1] device key; ARGV: claim id, valid until (Redis ms), user_code key prefix.
var completeScript = redis.NewScript(`
local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then return 'lost' end
local h = {}
for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
if h.claim_id ~= ARGV[1] then return 'lost' end
if h.status == 'consumed' then return 'ok' end
if h.status ~= 'approved' then return 'lost' end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], 'claim_id', 'claim_until_ms')
  return 'late'
end
redis.call('HSET', KEYS[1], 'status', 'consumed')
redis.call('DEL', ARGV[3] .. h.user_code)
return 'ok'`)

// Complete marks the claimed approval as used, after its token was minted and before the token is delivered: only a nil
// error lets the poll answer with the token. errClaimLost and errClaimLate leave the approval to a later poll, as does a
// Redis failure (the script may yet run, late, and then releases the claim).
func (s *State) Complete(ctx context.Context, a Authorization) error {
	ctx, cancel := redisCall(ctx)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// The poll gives up at deadline; on Redis's clock that is no earlier than redisAt plus the time left after the claim's
	// reply arrived. A run later than that, less the reply's travel time, has nobody waiting for it.
	validUntil := a.Claim.redisAt + (deadline.Sub(a.Claim.seenAt) - replyMargin).Milliseconds()
	if validUntil <= a.Claim.redisAt {
		return redisFailure("complete device authorization", errClaimLate)
	}
	res, err := completeScript.Run(ctx, s.rdb, []string{deviceKey(a.DeviceCodeHash)}, a.Claim.ID, validUntil,
		"user_code:"+slotOf(a.DeviceCodeHash)).Text()
	if err != nil {
		return redisFailure("complete device authorization", err)
	}
	// Both refusals come from a slow Redis (or a poll slowed down past its lease): to the client, a dependency failure.
	switch res {
	case "ok":
		return nil
	case "late":
		return redisFailure("complete device authorization", errClaimLate)
	}
	return redisFailure("complete device authorization", errClaimLost)
}

var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'claim_id') == ARGV[1] and redis.call('HGET', KEYS[1], 'status') == 'approved' then
  redis.call('HDEL', KEYS[1], 'claim_id', 'claim_until_ms')
end
return 1`)

// Release gives up a claim at once (the mint failed), so the next poll need not wait for the lease to run out. It is only
// a shortcut: an unreleased claim lapses by itself.
func (s *State) Release(ctx context.Context, a Authorization) error {
	ctx, cancel := redisCall(ctx)
	defer cancel()
	if err := releaseScript.Run(ctx, s.rdb, []string{deviceKey(a.DeviceCodeHash)}, a.Claim.ID).Err(); err != nil {
		return redisFailure("release device authorization", err)
	}
	return nil
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
if h.status ~= 'pending' then
  if h.status ~= ARGV[2] then return {'resolved', unpack(f)} end
  for i = 5, #ARGV, 2 do
    if (h[ARGV[i]] or '') ~= ARGV[i + 1] then return {'resolved', unpack(f)} end
  end
  return {'again', unpack(f)}
end
if tonumber(h.expires_ms) <= now then return {'unknown'} end
redis.call('HSET', dkey, 'status', ARGV[2], 'resolved_ms', now, unpack(ARGV, 5))
local ttl = math.max(tonumber(h.expires_ms) - now, tonumber(ARGV[4]))
redis.call('PEXPIRE', dkey, ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return {'ok', unpack(redis.call('HGETALL', dkey))}`)

// errResolvedAgain: Resolve found the authorization already resolved exactly as asked (same status, same subject): a
// retried approve or deny whose first answer was lost. It is a success; the first call already audited it.
var errResolvedAgain = errors.New("deviceflow: authorization already resolved the same way")

// Resolve approves or denies the pending authorization of userCode (canonical form) for subject, by compare-and-set from
// pending: of two racing calls exactly one wins; the other gets ErrAlreadyResolved. The same call made again (a retry, or the
// script running late) is not refused: it returns the authorization with errResolvedAgain. The resolved state lives for the
// rest of the code's lifetime, and at least 60 s. It returns the authorization as resolved.
func (s *State) Resolve(ctx context.Context, userCode string, to Status, subject tokens.Subject, now time.Time) (Authorization, error) {
	if to != StatusApproved && to != StatusDenied {
		return Authorization{}, fmt.Errorf("deviceflow: resolve to %q", to)
	}
	ctx, cancel := redisCall(ctx)
	defer cancel()
	res, err := resolveScript.Run(ctx, s.rdb, []string{userKey(userCode)}, "device_code:"+userSlot(userCode),
		string(to), now.UnixMilli(), resolvedMinTTL.Milliseconds(),
		fSubType, string(subject.Type), fAccount, subject.AccountID, fEmail, subject.Email, fIssuer, subject.Issuer).StringSlice()
	if err != nil {
		return Authorization{}, redisFailure("resolve device code", err)
	}
	switch res[0] {
	case "unknown":
		return Authorization{}, ErrUnknownCode
	case "resolved":
		return parseAuthorization("", res[1:]), ErrAlreadyResolved
	case "again":
		return parseAuthorization("", res[1:]), errResolvedAgain
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
	ctx, cancel := redisCall(ctx)
	defer cancel()
	res, err := lookupScript.Run(ctx, s.rdb, []string{userKey(userCode)}, "device_code:"+userSlot(userCode)).StringSlice()
	if err != nil {
		return Authorization{}, redisFailure("look up user code", err)
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
