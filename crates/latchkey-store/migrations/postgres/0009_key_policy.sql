-- PostgreSQL twin of migrations/sqlite/0009_key_policy.sql.
-- Least-privilege keys (issue 18): a key's permissions, restrictions, rate
-- limit, credits settings and metadata as one JSON object (NULL: none),
-- and its credit balance, which changes with use and is written apart:
-- the balance, the refill period it belongs to, and the version of the
-- last balance set through the API.
ALTER TABLE api_keys ADD COLUMN policy TEXT;
ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_period BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_version BIGINT NOT NULL DEFAULT 0;
