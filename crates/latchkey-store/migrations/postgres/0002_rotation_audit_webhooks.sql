-- Rotation, key notices, the audit log and webhooks.

-- The key this one replaced, and the key that replaced this one.
ALTER TABLE api_keys ADD COLUMN rotated_from TEXT;
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
-- Which notices about this key have been recorded (Unix seconds, or NULL):
-- 7 days and 1 day before expiry, expiry itself, rotation due by policy.
ALTER TABLE api_keys ADD COLUMN notified_expiring_7d BIGINT;
ALTER TABLE api_keys ADD COLUMN notified_expiring_1d BIGINT;
ALTER TABLE api_keys ADD COLUMN notified_expired BIGINT;
ALTER TABLE api_keys ADD COLUMN notified_rotation_due BIGINT;
CREATE INDEX api_keys_expires ON api_keys(expires_at) WHERE expires_at IS NOT NULL;

-- Append-only: rows are never updated or deleted, and carry no foreign keys
-- so that they outlive what they describe. No secret is ever written here.
CREATE TABLE audit_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    at          BIGINT NOT NULL,
    account_id  TEXT,
    app_id      TEXT,
    action      TEXT NOT NULL,
    actor_type  TEXT NOT NULL,
    actor_id    TEXT,
    address     TEXT,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    outcome     TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_account ON audit_events(account_id, seq);
CREATE INDEX audit_events_app ON audit_events(app_id, seq);

CREATE TABLE webhooks (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    app_id        TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    target        TEXT NOT NULL,
    -- The signing secret sealed under the master key (the webhook id as
    -- associated data).
    secret_sealed BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX webhooks_app ON webhooks(app_id);

CREATE TABLE webhook_triggers (
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    trigger    TEXT NOT NULL,
    PRIMARY KEY (webhook_id, trigger)
);

-- The durable delivery queue. A delivery is enqueued in the same
-- transaction as the event that causes it.
CREATE TABLE webhook_deliveries (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    -- pending, delivered or failed
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
