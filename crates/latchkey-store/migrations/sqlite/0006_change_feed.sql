-- The change feed. Every write that affects verification (a key created,
-- rotated or deleted; an app, service account, grant or account changed or
-- deleted) appends the thing it touched here in its own transaction. Nodes
-- follow the feed by `seq` (woken by NOTIFY on PostgreSQL) and reload what
-- each change names; old changes are pruned, and `change_watermark` says
-- up to where, so that a node that fell further behind reloads everything.
CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX changes_at ON changes(at);

CREATE TABLE change_watermark (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
