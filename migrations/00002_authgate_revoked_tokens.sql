-- authgate_revoked_tokens records every token hash taken out of service: revoked, hard-expired (both set Dify's token_hash to
-- NULL) or replaced by a rotation. Each record is written in the same statement as the change to oauth_access_tokens, so a
-- committed revocation is never lost, even when the request that made it could not reach Redis: every extauthz replica reads
-- the recent records and keeps the hashes out of its caches (docs/architecture.md, "Revocation propagation").
-- The table is authgate's own: no foreign key to oauth_access_tokens, which belongs to Dify and must not gain a trigger.
-- Retention pruning deletes records older than its cutoff, with the rows they came from.

-- +goose Up
CREATE TABLE IF NOT EXISTS authgate_revoked_tokens (
    token_hash varchar(64) NOT NULL,
    token_id   uuid        NOT NULL,
    revoked_at timestamptz NOT NULL,
    reason     varchar(16) NOT NULL,
    CONSTRAINT authgate_revoked_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT authgate_revoked_tokens_reason_check CHECK (reason IN ('revoked', 'rotated', 'expired'))
);

CREATE INDEX IF NOT EXISTS idx_authgate_revoked_tokens_revoked_at ON authgate_revoked_tokens (revoked_at);

-- +goose Down
-- For tests only: authgate never runs down migrations on a real database (deviceflow migrate has no down).
DROP TABLE IF EXISTS authgate_revoked_tokens;
