-- PostgreSQL twin of migrations/sqlite/0013_teams.sql.
-- Teams (issue 20): each user account is a member of its account with a
-- role; existing user accounts (each account's first user among them)
-- become owners. A role change or a member's removal is recorded in
-- `changes` (entity `userAccount`), so every node's index follows it.
ALTER TABLE user_accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'owner'
    CHECK (role IN ('owner', 'admin', 'developer', 'viewer'));

-- Invites: an owner invites an email address with a role; the invite's
-- one-time token is shown once and only its SHA-256 is kept. It is
-- accepted once (accepted_at), revoked (revoked_at) or expires.
CREATE TABLE invites (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    token_hash  BYTEA NOT NULL UNIQUE,
    invited_by  TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT,
    revoked_at  BIGINT
);
CREATE INDEX invites_account ON invites(account_id);
