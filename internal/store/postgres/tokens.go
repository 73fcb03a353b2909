package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authgate/authgate/internal/directory"
	"github.com/authgate/authgate/internal/ids"
	"github.com/authgate/authgate/internal/store/internal/rules"
	"github.com/authgate/authgate/internal/tokens"
)

// TokenStore is tokens.Store on oauth_access_tokens.
type TokenStore struct {
	pool *pgxpool.Pool
}

var _ tokens.Store = (*TokenStore)(nil)

// NewTokenStore returns a token store on pool. The schema must be migrated (Migrate).
func NewTokenStore(pool *pgxpool.Pool) *TokenStore { return &TokenStore{pool: pool} }

// mintAttempts bounds the retries of the insert/insert race: two first mints of one device both find no live row, both insert,
// and the loser's unique violation is retried, then finds the winner's row and rotates it.
const mintAttempts = 5

const tokenColumns = `id::text, subject_email, subject_issuer, account_id::text, client_id, device_label, prefix, token_hash,
	created_at, last_used_at, expires_at, revoked_at`

// mintSQL rotates the subject's live row for the device in place or inserts the first one, in one statement; ownsSlot (%s)
// is the subject's condition (accountSlot or externalSlot). FOR UPDATE makes concurrent rotations of one row queue up, and
// returns the row as the previous rotation left it, so every replaced hash is reported to exactly one caller. An account's
// row is found by its id, not its email: two accounts whose emails differ only in case must not rotate each other's
// tokens, and an account whose email changed keeps its row (the stored email follows). ORDER BY ... LIMIT 1 picks the
// newest should an account hold two live rows for one device, as rows minted under an earlier email can.
const mintSQL = `
WITH old AS (
	SELECT id, token_hash FROM oauth_access_tokens
	WHERE %s AND subject_issuer = $2 AND client_id = $3 AND device_label = $4 AND revoked_at IS NULL
	ORDER BY created_at DESC, id LIMIT 1
	FOR UPDATE
), rotated AS (
	UPDATE oauth_access_tokens t
	SET subject_email = $1, token_hash = $7, prefix = $6, created_at = $8, expires_at = $9, last_used_at = NULL
	FROM old WHERE t.id = old.id
	RETURNING ` + `t.id::text, t.subject_email, t.subject_issuer, t.account_id::text, t.client_id, t.device_label, t.prefix,
		t.token_hash, t.created_at, t.last_used_at, t.expires_at, t.revoked_at, old.token_hash AS replaced
), inserted AS (
	INSERT INTO oauth_access_tokens (id, subject_email, subject_issuer, account_id, client_id, device_label, prefix,
		token_hash, created_at, expires_at)
	SELECT gen_random_uuid(), $1, $2, $5::uuid, $3, $4, $6, $7, $8, $9
	WHERE NOT EXISTS (SELECT 1 FROM old)
	RETURNING ` + tokenColumns + `, NULL::varchar AS replaced
), recorded AS (
	` + recordRevoked + ` SELECT replaced, id::uuid, $8, 'rotated' FROM rotated WHERE replaced IS NOT NULL ` + onRecorded + `
)
SELECT * FROM rotated UNION ALL SELECT * FROM inserted`

var (
	accountMintSQL  = fmt.Sprintf(mintSQL, "account_id = $5::uuid")
	externalMintSQL = fmt.Sprintf(mintSQL, "account_id IS NULL AND subject_email = $1")
)

// recordRevoked and onRecorded frame the INSERT, run as a CTE of the statement that takes a hash out of service, that keeps
// the dead hash in authgate_revoked_tokens: one statement, so the record commits if and only if the change does. A hash is
// random and never reused; the conflict clause only makes the insert idempotent.
const (
	recordRevoked = `INSERT INTO authgate_revoked_tokens (token_hash, token_id, revoked_at, reason)`
	onRecorded    = `ON CONFLICT (token_hash) DO NOTHING`
)

// Mint implements tokens.Store.
func (s *TokenStore) Mint(ctx context.Context, req tokens.MintRequest) (tokens.Minted, error) {
	row, err := rules.Mint(req)
	if err != nil {
		return tokens.Minted{}, err
	}
	var accountID *string
	query := externalMintSQL
	if row.AccountID != "" {
		accountID, query = &row.AccountID, accountMintSQL
	}
	for range mintAttempts {
		var m tokens.Minted
		var replaced *string
		err := scanToken(s.pool.QueryRow(ctx, query, row.Email, row.Issuer, row.ClientID, row.DeviceLabel, accountID,
			row.Prefix, row.TokenHash, row.CreatedAt, row.ExpiresAt), &m.Token, &replaced)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			if replaced != nil {
				m.RotatedHash = *replaced
			}
			return m, nil
		case errors.As(err, &pgErr) && pgErr.Code == uniqueViolation && pgErr.ConstraintName == perDeviceIndex:
			// Either this subject lost the insert/insert race (the winner's row is there now: rotate it) or another
			// subject holds the slot.
			if err := s.checkSlot(ctx, row); err != nil {
				return tokens.Minted{}, err
			}
		case errors.As(err, &pgErr) && pgErr.Code == uniqueViolation:
			return tokens.Minted{}, fmt.Errorf("postgres: mint: token hash already in use: %w", tokens.ErrConflict)
		default:
			return tokens.Minted{}, fmt.Errorf("postgres: mint: %w", err)
		}
	}
	return tokens.Minted{}, fmt.Errorf("postgres: mint: %d attempts lost to concurrent mints: %w", mintAttempts, tokens.ErrConflict)
}

// checkSlot tells, after a mint hit the per-device unique index, whether the live row in the slot is another subject's
// (ErrDeviceTaken) or this subject's own, or gone (nil: try again).
func (s *TokenStore) checkSlot(ctx context.Context, row rules.MintRow) error {
	var holder *string
	err := s.pool.QueryRow(ctx, `SELECT account_id::text FROM oauth_access_tokens
		WHERE subject_email = $1 AND subject_issuer = $2 AND client_id = $3 AND device_label = $4 AND revoked_at IS NULL`,
		row.Email, row.Issuer, row.ClientID, row.DeviceLabel).Scan(&holder)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("postgres: mint: %w", err)
	case holder == nil && row.AccountID == "", holder != nil && *holder == row.AccountID:
		return nil
	}
	return fmt.Errorf("postgres: mint: %w", tokens.ErrDeviceTaken)
}

const (
	uniqueViolation = "23505"
	perDeviceIndex  = "uq_oauth_active_per_device"
)

// LookupByHash implements tokens.Store.
func (s *TokenStore) LookupByHash(ctx context.Context, hash string) (tokens.Token, error) {
	var t tokens.Token
	err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM oauth_access_tokens
		WHERE token_hash = $1 AND revoked_at IS NULL`, hash), &t)
	if errors.Is(err, pgx.ErrNoRows) {
		return tokens.Token{}, tokens.ErrNotFound
	}
	if err != nil {
		return tokens.Token{}, fmt.Errorf("postgres: lookup token: %w", err)
	}
	return t, nil
}

// lookupWithAccountSQL is LookupByHash's read joined with what a Check of the token needs next from Dify's tables: the
// row's account (none for an external subject's row, or when the account is gone) and, when $2 is a tenant id, whether
// the account has a tenant_account_joins row for it. The status half of IsActiveMember is the caller's, from the account.
var lookupWithAccountSQL = `SELECT ` + prefixColumns("t", tokenColumns) + `, a.id::text, a.email, a.name, a.status,
	EXISTS (SELECT 1 FROM tenant_account_joins j WHERE j.tenant_id = $2 AND j.account_id = a.id)
	FROM oauth_access_tokens t LEFT JOIN accounts a ON a.id = t.account_id
	WHERE t.token_hash = $1 AND t.revoked_at IS NULL`

// LookupByHashWithAccount is LookupByHash, and in the same query the row's account (the zero Account when the row has
// none or it does not exist) and whether that account is an active member of tenantID (IsActiveMember's answer; false for
// an empty or malformed tenant id): one round trip where a Check of a token no cache knows would otherwise make three.
func (s *TokenStore) LookupByHashWithAccount(ctx context.Context, hash, tenantID string) (tokens.Token, directory.Account, bool, error) {
	var tenant *string
	if id, ok := ids.Canonical(tenantID); ok {
		tenant = &id
	}
	var t tokens.Token
	var accountID, email, name, status *string
	var joined bool
	err := scanToken(s.pool.QueryRow(ctx, lookupWithAccountSQL, hash, tenant), &t, &accountID, &email, &name, &status, &joined)
	if errors.Is(err, pgx.ErrNoRows) {
		return tokens.Token{}, directory.Account{}, false, tokens.ErrNotFound
	}
	if err != nil {
		return tokens.Token{}, directory.Account{}, false, fmt.Errorf("postgres: lookup token with account: %w", err)
	}
	if accountID == nil {
		return t, directory.Account{}, false, nil
	}
	a := directory.Account{ID: *accountID, Email: deref(email), Name: deref(name), Status: deref(status)}
	return t, a, joined && a.Status == directory.AccountStatusActive, nil
}

// prefixColumns qualifies each column of a select list such as tokenColumns with a table alias.
func prefixColumns(alias, list string) string {
	cols := strings.Split(list, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// HardExpire implements tokens.Store. The expiry condition keeps a hard-expire that raced a rotation of the same row (same id,
// new hash, new expiry) from killing the fresh token. FOR UPDATE makes concurrent hard-expires queue up and re-check the row,
// so exactly one of them hits and records the hash.
func (s *TokenStore) HardExpire(ctx context.Context, id string, now time.Time) (bool, error) {
	id, ok := ids.Canonical(id)
	if !ok {
		return false, nil
	}
	var hits int
	err := s.pool.QueryRow(ctx, `
		WITH old AS (
			SELECT id, token_hash FROM oauth_access_tokens
			WHERE id = $1 AND revoked_at IS NULL AND expires_at <= $2
			FOR UPDATE
		), expired AS (
			UPDATE oauth_access_tokens t SET revoked_at = $2, token_hash = NULL FROM old WHERE t.id = old.id
			RETURNING old.id, old.token_hash
		), recorded AS (
			`+recordRevoked+` SELECT token_hash, id, $2, 'expired' FROM expired WHERE token_hash IS NOT NULL `+onRecorded+`
		)
		SELECT count(*) FROM expired`, id, now).Scan(&hits)
	if err != nil {
		return false, fmt.Errorf("postgres: hard-expire token: %w", err)
	}
	return hits == 1, nil
}

// Revoke implements tokens.Store.
func (s *TokenStore) Revoke(ctx context.Context, subject tokens.Subject, id string, now time.Time) (tokens.Token, error) {
	id, idOK := ids.Canonical(id)
	owner, ownerOK := rules.OwnerOf(subject)
	if !idOK || !ownerOK {
		return tokens.Token{}, tokens.ErrNotFound
	}
	// The row is returned as it was before the update: the caller needs its hash for the tombstone.
	owns, ownerArgs := ownerCondition(owner, 3)
	var t tokens.Token
	err := scanToken(s.pool.QueryRow(ctx, `
		WITH old AS (
			SELECT `+tokenColumns+` FROM oauth_access_tokens
			WHERE id = $1 AND revoked_at IS NULL AND `+owns+`
			FOR UPDATE
		), revoked AS (
			UPDATE oauth_access_tokens t SET revoked_at = $2, token_hash = NULL FROM old WHERE t.id = old.id::uuid
		), recorded AS (
			`+recordRevoked+` SELECT token_hash, id::uuid, $2, 'revoked' FROM old WHERE token_hash IS NOT NULL `+onRecorded+`
		)
		SELECT * FROM old`, append([]any{id, now}, ownerArgs...)...), &t)
	if errors.Is(err, pgx.ErrNoRows) {
		return tokens.Token{}, s.notRevoked(ctx, id, owner)
	}
	if err != nil {
		return tokens.Token{}, fmt.Errorf("postgres: revoke token: %w", err)
	}
	return t, nil
}

// notRevoked tells why Revoke changed nothing: the subject's token is already dead (a retried revocation), or there is no
// such token of the subject's.
func (s *TokenStore) notRevoked(ctx context.Context, id string, owner rules.Owner) error {
	owns, ownerArgs := ownerCondition(owner, 2)
	var dead bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM oauth_access_tokens
		WHERE id = $1 AND revoked_at IS NOT NULL AND `+owns+`)`, append([]any{id}, ownerArgs...)...).Scan(&dead)
	switch {
	case err != nil:
		return fmt.Errorf("postgres: revoke token: %w", err)
	case dead:
		return tokens.ErrAlreadyRevoked
	}
	return tokens.ErrNotFound
}

// recordLastUsedSQL writes a flush of uses in one statement. The row conditions are the whole contract: a revoked row is
// never written, nor a row rotated after the use (its created_at is the rotation's), and last_used_at only moves forward.
// The rows are locked first with SKIP LOCKED, so a flush never waits on a revocation or a mint holding a row, nor on
// another replica's flush (two batches locking rows in different orders could otherwise deadlock); a skipped use is only a
// slightly older last_used_at. The conditions are checked again by the UPDATE, on the row it writes. t.id = ANY($1) names
// the rows by their primary key: without it, a table whose statistics are stale (just loaded, not analysed yet) is
// planned as a scan of every live row (revoked_at IS NULL, through a partial index) hash-joined with the batch, which made
// a flush of ten rows cost ten milliseconds.
const recordLastUsedSQL = `
WITH used AS (
	SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, used_at)
), target AS (
	SELECT t.id, used.used_at FROM oauth_access_tokens t JOIN used ON t.id = used.id
	WHERE t.id = ANY($1::uuid[]) AND t.revoked_at IS NULL AND t.created_at <= used.used_at
		AND (t.last_used_at IS NULL OR t.last_used_at < used.used_at)
	FOR NO KEY UPDATE OF t SKIP LOCKED
)
UPDATE oauth_access_tokens t SET last_used_at = target.used_at
FROM target
WHERE t.id = target.id AND t.revoked_at IS NULL AND t.created_at <= target.used_at
	AND (t.last_used_at IS NULL OR t.last_used_at < target.used_at)`

// RecordLastUsed implements tokens.Store.
func (s *TokenStore) RecordLastUsed(ctx context.Context, uses []tokens.Use) (int, error) {
	batch := rules.LastUses(uses)
	if len(batch) == 0 {
		return 0, ctx.Err()
	}
	idList, times := make([]string, len(batch)), make([]time.Time, len(batch))
	for i, u := range batch {
		idList[i], times[i] = u.TokenID, u.At
	}
	tag, err := s.pool.Exec(ctx, recordLastUsedSQL, idList, times)
	if err != nil {
		return 0, fmt.Errorf("postgres: record last use: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// RevokedSince implements tokens.Store: a range scan of the revoked_at index, so a reader polling the last minute reads only
// that minute's records.
func (s *TokenStore) RevokedSince(ctx context.Context, since time.Time) ([]tokens.RevokedHash, error) {
	rows, err := s.pool.Query(ctx, `SELECT token_hash, token_id::text, revoked_at, reason FROM authgate_revoked_tokens
		WHERE revoked_at >= $1 ORDER BY revoked_at, token_hash`, since)
	if err != nil {
		return nil, fmt.Errorf("postgres: revoked since: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanRevoked)
	if err != nil {
		return nil, fmt.Errorf("postgres: revoked since: %w", err)
	}
	return out, nil
}

// LookupRevoked implements tokens.Store.
func (s *TokenStore) LookupRevoked(ctx context.Context, hash string) (tokens.RevokedHash, error) {
	rows, err := s.pool.Query(ctx, `SELECT token_hash, token_id::text, revoked_at, reason FROM authgate_revoked_tokens
		WHERE token_hash = $1`, hash)
	if err != nil {
		return tokens.RevokedHash{}, fmt.Errorf("postgres: lookup revoked token: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRevoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return tokens.RevokedHash{}, tokens.ErrNotFound
	}
	if err != nil {
		return tokens.RevokedHash{}, fmt.Errorf("postgres: lookup revoked token: %w", err)
	}
	return r, nil
}

func scanRevoked(row pgx.CollectableRow) (tokens.RevokedHash, error) {
	var r tokens.RevokedHash
	var reason string
	err := row.Scan(&r.Hash, &r.TokenID, &r.RevokedAt, &reason)
	r.Reason = tokens.RevocationReason(reason)
	return r, err
}

// foldedEmail is tokens.NormalizeEmail's case folding in SQL: ASCII letters only. lower() would fold like Unicode (U+212A to
// "k" in a UTF-8 database), merging owners that NormalizeEmail keeps apart. It tolerates rows a Dify writer stored in mixed case.
const foldedEmail = `translate(subject_email, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')`

// ownerCondition is rules.Owner.Owns in SQL, with its parameters numbered from first. Two shapes rather than one CASE, so
// the planner can use the account_id index for accounts.
func ownerCondition(o rules.Owner, first int) (string, []any) {
	if o.AccountID != "" {
		return fmt.Sprintf("account_id = $%d", first), []any{o.AccountID}
	}
	return fmt.Sprintf("account_id IS NULL AND %s = $%d AND subject_issuer = $%d", foldedEmail, first, first+1),
		[]any{o.Email, o.Issuer}
}

// ListLive implements tokens.Store.
func (s *TokenStore) ListLive(ctx context.Context, subject tokens.Subject, now time.Time, p tokens.Page) ([]tokens.Token, int, error) {
	offset, limit, err := rules.Window(p)
	if err != nil {
		return nil, 0, err
	}
	owner, ok := rules.OwnerOf(subject)
	if !ok {
		return []tokens.Token{}, 0, nil
	}
	const live = ` FROM oauth_access_tokens WHERE revoked_at IS NULL AND expires_at > $1 AND `
	owns, ownerArgs := ownerCondition(owner, 2)
	args := append([]any{now}, ownerArgs...)
	batch := &pgx.Batch{}
	batch.Queue(`SELECT count(*)`+live+owns, args...)
	batch.Queue(`SELECT `+tokenColumns+live+owns+
		fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d OFFSET $%d`, len(args)+1, len(args)+2),
		append(args, limit, offset)...)
	results := s.pool.SendBatch(ctx, batch)
	defer results.Close()
	var total int
	if err := results.QueryRow().Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("postgres: count live tokens: %w", err)
	}
	rows, err := results.Query()
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: list live tokens: %w", err)
	}
	list := []tokens.Token{}
	for rows.Next() {
		var t tokens.Token
		if err := scanToken(rows, &t); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("postgres: list live tokens: %w", err)
		}
		list = append(list, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: list live tokens: %w", err)
	}
	return list, total, nil
}

// scanToken reads tokenColumns, then any extra columns into extra.
func scanToken(row pgx.Row, t *tokens.Token, extra ...any) error {
	var issuer, accountID, hash *string
	dest := append([]any{&t.ID, &t.SubjectEmail, &issuer, &accountID, &t.ClientID, &t.DeviceLabel, &t.Prefix, &hash,
		&t.CreatedAt, &t.LastUsedAt, &t.ExpiresAt, &t.RevokedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return err
	}
	t.SubjectIssuer, t.AccountID, t.TokenHash = deref(issuer), deref(accountID), deref(hash)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
