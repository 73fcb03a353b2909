-- Least-privilege Postgres roles for authgate (docs/operations.md, "Postgres grants").
-- Run as a superuser or as the role that owns Dify's tables, in Dify's database. Replace:
--   dify           Dify's database
--   public         the schema holding Dify's tables, if not public
--   dify_owner     the role that owns Dify's tables
--   the passwords
-- Checked against PostgreSQL 15 with the statements authgate runs (mint, lookup, hard-expire, revoke, list, prune, last-used
-- times, directory reads, the revocation records and their reconciler) and with `deviceflow migrate`, on a fresh database and
-- on one where Dify had already created oauth_access_tokens. internal/store/postgres's grants test runs this file, the
-- optional role included, and those statements under each role.

-- 1. Roles: one for the running services, one for the migration Job.
CREATE ROLE authgate_runtime LOGIN PASSWORD 'change-me';
CREATE ROLE authgate_migrate LOGIN PASSWORD 'change-me';
GRANT CONNECT ON DATABASE dify TO authgate_runtime, authgate_migrate;
GRANT USAGE ON SCHEMA public TO authgate_runtime, authgate_migrate;

-- 2. Migration role. CREATE on the schema lets it create oauth_access_tokens (when Dify has not), authgate_revoked_tokens and
-- authgate_schema_version; it owns what it creates.
GRANT CREATE ON SCHEMA public TO authgate_migrate;
-- Only when Dify's own migration already created oauth_access_tokens: the migration runs CREATE INDEX IF NOT EXISTS on it, and
-- Postgres requires table ownership for that even when the index exists ("must be owner of table oauth_access_tokens").
-- Either run the Job once with Dify's owner role, or make the migration role a member of it:
-- GRANT dify_owner TO authgate_migrate;

-- 3. Runtime role: read the columns of Dify's directory that authgate reads, and nothing else of Dify's.
GRANT SELECT (id, tenant_id, name, mode, status, enable_api) ON apps TO authgate_runtime;
GRANT SELECT (id, name, status) ON tenants TO authgate_runtime;
GRANT SELECT (id, email, name, status) ON accounts TO authgate_runtime;
GRANT SELECT (tenant_id, account_id, role, current) ON tenant_account_joins TO authgate_runtime;
-- deviceflow's GitHub sign-in finds the Dify account linked to a GitHub user; never the stored token (encrypted_token).
GRANT SELECT (account_id, provider, open_id) ON account_integrates TO authgate_runtime;

-- 4. After `deviceflow migrate` has run, as the owner of oauth_access_tokens (authgate_migrate if it created the table, else
-- Dify's owner): full DML on the token table. Advisory locks (prune) and gen_random_uuid() need no grant.
GRANT SELECT, INSERT, UPDATE, DELETE ON oauth_access_tokens TO authgate_runtime;

-- 5. As authgate_migrate (the owner of authgate_revoked_tokens): the revocation records. Every revoke, rotation and hard-expire
-- inserts the hash it takes out of service in the same statement; extauthz's reconciler and deviceflow's retried revocations
-- read them; the retention prune deletes old ones.
GRANT SELECT, INSERT, DELETE ON authgate_revoked_tokens TO authgate_runtime;

-- 6. Optional, narrower: extauthz only looks tokens up, hard-expires them (revoked_at and token_hash, recording the hash),
-- writes last-used times (last_used_at, nothing else) and reads the revocation records. To give it its own role (and its own
-- Secret key), run these without the leading "--" (as a superuser, or each grant as the owner of its table):
--   CREATE ROLE authgate_extauthz LOGIN PASSWORD 'change-me';
--   GRANT CONNECT ON DATABASE dify TO authgate_extauthz;
--   GRANT USAGE ON SCHEMA public TO authgate_extauthz;
--   GRANT SELECT (id, tenant_id, name, mode, status, enable_api) ON apps TO authgate_extauthz;
--   GRANT SELECT (id, name, status) ON tenants TO authgate_extauthz;
--   GRANT SELECT (id, email, name, status) ON accounts TO authgate_extauthz;
--   GRANT SELECT (tenant_id, account_id, role, current) ON tenant_account_joins TO authgate_extauthz;
--   GRANT SELECT, UPDATE (revoked_at, token_hash) ON oauth_access_tokens TO authgate_extauthz;
--   GRANT UPDATE (last_used_at) ON oauth_access_tokens TO authgate_extauthz;
--   GRANT SELECT, INSERT ON authgate_revoked_tokens TO authgate_extauthz;
-- deviceflow keeps authgate_runtime: it mints, revokes, prunes and records last uses too.
