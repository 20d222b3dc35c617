-- Public-key API keys (issue 22): the customer keeps the private key and
-- Latchkey holds only the public one, as a JWK (`OKP`/Ed25519 or
-- `EC`/P-256). Such a key has no secret: its `secret_sealed` is empty and
-- nothing ever opens it. NULL for every key with a secret.
ALTER TABLE api_keys ADD COLUMN public_key TEXT;
