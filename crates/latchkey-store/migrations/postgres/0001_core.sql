-- PostgreSQL twin of migrations/sqlite/0001_core.sql (same schema history).
-- Latchkey core schema. Timestamps are Unix seconds (UTC).
-- `seq` orders rows by creation for cursor paging; ids are random.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE operator_tokens (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE user_accounts (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX user_accounts_account ON user_accounts(account_id);

CREATE TABLE service_accounts (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX service_accounts_account ON service_accounts(account_id);

CREATE TABLE apps (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    settings     TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL
);
CREATE INDEX apps_account ON apps(account_id);

-- Apps a service account created or was granted.
CREATE TABLE service_account_apps (
    service_account_id TEXT NOT NULL REFERENCES service_accounts(id) ON DELETE CASCADE,
    app_id             TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (service_account_id, app_id)
);
CREATE INDEX service_account_apps_app ON service_account_apps(app_id);

-- API keys. Exactly one owner column is set, matching `kind`.
-- `secret_sealed` is the secret under the master key (AES-256-GCM, the key
-- id as associated data); the plain secret is never stored.
CREATE TABLE api_keys (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL CHECK (kind IN ('app', 'act', 'svc')),
    account_id         TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    app_id             TEXT REFERENCES apps(id) ON DELETE CASCADE,
    user_account_id    TEXT REFERENCES user_accounts(id) ON DELETE CASCADE,
    service_account_id TEXT REFERENCES service_accounts(id) ON DELETE CASCADE,
    display_name       TEXT NOT NULL,
    secret_sealed      BYTEA NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT,
    last_used_at       BIGINT,
    CHECK (
        (kind = 'app' AND app_id IS NOT NULL AND user_account_id IS NULL AND service_account_id IS NULL) OR
        (kind = 'act' AND app_id IS NULL AND user_account_id IS NOT NULL AND service_account_id IS NULL) OR
        (kind = 'svc' AND app_id IS NULL AND user_account_id IS NULL AND service_account_id IS NOT NULL)
    )
);
CREATE INDEX api_keys_app ON api_keys(app_id);
CREATE INDEX api_keys_user_account ON api_keys(user_account_id);
CREATE INDEX api_keys_service_account ON api_keys(service_account_id);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE app_users (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    app_id      TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    given_name  TEXT,
    surname     TEXT,
    email       TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    UNIQUE (app_id, external_id)
);
