-- Replica tokens (issue 21): credentials of in-process replicas, which may
-- read only the replication feed (/v1/replica/snapshot and
-- /v1/replica/changes). Kept beside verifier tokens, which they resemble
-- (operator-managed, shown once, only the SHA-256 kept, each change in
-- `changes` as entity `verifierToken`); `kind` tells them apart.
ALTER TABLE verifier_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'verifier';
