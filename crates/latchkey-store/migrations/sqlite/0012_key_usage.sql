-- Usage analytics (issue 20): every check of a key's credentials, counted
-- by outcome ('valid' or the refusal code) in buckets of a minute (kept
-- 48 hours), an hour (90 days) and a day (2 years). Each node adds what it
-- counted since its last flush, so the counts of all nodes add up.
--
-- A key is named once, in usage_keys, with the app and account it belongs
-- to (kept after the key is deleted, so its past stays in the app's
-- totals); a bucket row holds only that row's number: about 20 bytes of
-- table and no secondary index per bucket.
CREATE TABLE usage_keys (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id     TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    app_id     TEXT REFERENCES apps(id) ON DELETE CASCADE
);
CREATE INDEX usage_keys_app ON usage_keys(app_id);
CREATE INDEX usage_keys_account ON usage_keys(account_id);

-- granularity: 60, 3600 or 86400; start: the bucket's first second (unix,
-- UTC).
CREATE TABLE key_usage (
    usage_key   INTEGER NOT NULL REFERENCES usage_keys(seq) ON DELETE CASCADE,
    granularity INTEGER NOT NULL,
    start       INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (usage_key, granularity, start, outcome)
) WITHOUT ROWID;
-- Retention deletes by age.
CREATE INDEX key_usage_age ON key_usage(granularity, start);

-- A key's page in the dashboard lists the audit events about that key.
CREATE INDEX audit_events_target ON audit_events(target_id, seq);
