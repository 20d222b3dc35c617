-- Rate limits across nodes (issue 18): what all nodes together took of
-- one window of one key's limit (subject '' for the key itself, else the
-- user of its appUser JWTs). Each node leases counts from here and admits
-- only what it leased, so the cluster never admits more than the limit.
-- Rows of ended windows are deleted by the maintenance task.
CREATE TABLE ratelimit_leases (
    key_id       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    taken        INTEGER NOT NULL,
    PRIMARY KEY (key_id, subject, window_start)
);
CREATE INDEX ratelimit_leases_end ON ratelimit_leases (window_end);
