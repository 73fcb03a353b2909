-- oauth_access_tokens as Dify defines it, so Dify and authgate share one table. Every statement is IF NOT EXISTS: on a database
-- where Dify's migration already created the table, the runner first checks its shape, then this migration adopts it.

-- +goose Up
CREATE TABLE IF NOT EXISTS oauth_access_tokens (
    id             uuid         NOT NULL DEFAULT gen_random_uuid(),
    subject_email  varchar(255) NOT NULL,
    subject_issuer varchar(255),
    account_id     uuid,
    client_id      varchar(64)  NOT NULL,
    device_label   varchar(255) NOT NULL,
    prefix         varchar(8)   NOT NULL,
    token_hash     varchar(64),
    created_at     timestamptz  NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    expires_at     timestamptz  NOT NULL,
    revoked_at     timestamptz,
    CONSTRAINT oauth_access_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT oauth_access_tokens_token_hash_key UNIQUE (token_hash)
);

CREATE INDEX IF NOT EXISTS idx_oauth_access_tokens_subject_email
    ON oauth_access_tokens (subject_email) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_oauth_access_tokens_account_id
    ON oauth_access_tokens (account_id) WHERE revoked_at IS NULL AND account_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_oauth_access_tokens_subject_client
    ON oauth_access_tokens (subject_email, client_id) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_oauth_access_tokens_token_hash
    ON oauth_access_tokens (token_hash) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_oauth_active_per_device
    ON oauth_access_tokens (subject_email, subject_issuer, client_id, device_label) WHERE revoked_at IS NULL;

-- +goose Down
-- For tests only: authgate never runs down migrations on a real database (deviceflow migrate has no down).
DROP TABLE IF EXISTS oauth_access_tokens;
