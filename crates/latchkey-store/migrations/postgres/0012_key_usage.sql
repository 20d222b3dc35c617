-- PostgreSQL twin of migrations/sqlite/0012_key_usage.sql.
-- Usage analytics (issue 20): every check of a key's credentials, counted
-- by outcome ('valid' or the refusal code) in buckets of a minute (kept
-- 48 hours), an hour (90 days) and a day (2 years). Each node adds what it
-- counted since its last flush, so the counts of all nodes add up.
CREATE TABLE usage_keys (
    seq        BIGSERIAL PRIMARY KEY,
    key_id     TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    app_id     TEXT REFERENCES apps(id) ON DELETE CASCADE
);
CREATE INDEX usage_keys_app ON usage_keys(app_id);
CREATE INDEX usage_keys_account ON usage_keys(account_id);

CREATE TABLE key_usage (
    usage_key   BIGINT NOT NULL REFERENCES usage_keys(seq) ON DELETE CASCADE,
    granularity BIGINT NOT NULL,
    start       BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (usage_key, granularity, start, outcome)
);
CREATE INDEX key_usage_age ON key_usage(granularity, start);

-- A key's page in the dashboard lists the audit events about that key.
CREATE INDEX audit_events_target ON audit_events(target_id, seq);
