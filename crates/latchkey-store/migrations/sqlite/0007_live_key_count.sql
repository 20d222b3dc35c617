-- The live keys of each owner, for the per-owner limit that every key
-- creation checks by counting. Without these the count visited the table
-- row of every key the owner ever had (to read `replaced_by` and
-- `expires_at`); with them it reads only these small entries. Each key is
-- in at most one of them, and leaves it when it is replaced.
-- `replaced_by` is a column although it is always NULL here, so that the
-- count can be answered from the index alone.
CREATE INDEX api_keys_app_live ON api_keys(app_id, replaced_by, expires_at)
    WHERE app_id IS NOT NULL AND replaced_by IS NULL;
CREATE INDEX api_keys_user_account_live ON api_keys(user_account_id, replaced_by, expires_at)
    WHERE user_account_id IS NOT NULL AND replaced_by IS NULL;
CREATE INDEX api_keys_service_account_live ON api_keys(service_account_id, replaced_by, expires_at)
    WHERE service_account_id IS NOT NULL AND replaced_by IS NULL;
