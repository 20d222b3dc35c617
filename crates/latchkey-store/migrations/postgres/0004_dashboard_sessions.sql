-- Dashboard sign-in sessions. The session id itself (256 random bits) lives
-- only in the person's cookie; the store keeps its SHA-256, so a copy of the
-- database signs no one in. Deleting the user account (or its account)
-- ends its sessions.
CREATE TABLE dashboard_sessions (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id_hash         BYTEA NOT NULL UNIQUE,
    user_account_id TEXT NOT NULL REFERENCES user_accounts(id) ON DELETE CASCADE,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions(user_account_id);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions(expires_at);
