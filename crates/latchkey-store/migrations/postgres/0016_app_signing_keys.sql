-- Each app's signing keys (issue 22): Latchkey's own Ed25519 keys that sign
-- the appUser tokens it mints with alg EdDSA, published at
-- /v1/apps/{appId}/jwks.json. `private_sealed` is the PKCS#8 document
-- sealed under the master key (AES-256-GCM, the key id as associated
-- data); `public_key` the 32-byte public key, base64url. The current key
-- has no `retired_at`; a rotation retires it and removes the one retired
-- before, so an app has at most two: the current and the previous.
CREATE TABLE app_signing_keys (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    app_id         TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    private_sealed BYTEA NOT NULL,
    public_key     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    retired_at     BIGINT
);
CREATE INDEX app_signing_keys_app ON app_signing_keys(app_id);
-- At most one current key per app.
CREATE UNIQUE INDEX app_signing_keys_current ON app_signing_keys(app_id) WHERE retired_at IS NULL;
