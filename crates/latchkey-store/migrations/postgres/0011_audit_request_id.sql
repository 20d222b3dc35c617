-- The X-Request-Id of the request that caused an audit event (returned as
-- `requestId`); NULL for events of the CLI, of background work, and for
-- events recorded before this migration.
ALTER TABLE audit_events ADD COLUMN request_id TEXT;
