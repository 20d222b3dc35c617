-- Verifier tokens: credentials of the operator's API servers, which may
-- call only /v1/verify and /v1/introspect. As for operator tokens, only
-- the SHA-256 of the token is kept. Created and deleted by the operator;
-- each change is recorded in `changes` (entity `verifierToken`).
CREATE TABLE verifier_tokens (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
);
