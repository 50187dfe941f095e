-- API keys: `Authorization: Bearer bb_<prefix>_<secret>`.
--
-- A key is shown once, when it is created; only its SHA-256 is stored. The
-- secret is 40 random characters from a CSPRNG (about 238 bits), so a fast
-- hash is enough: there is nothing to guess that a slow KDF would protect.
-- The public prefix finds the row; the hash is compared in constant time.
CREATE TABLE integrations.api_keys (
    id UUID PRIMARY KEY,
    -- The key's public part: `bb_<prefix>_...`, shown in `keys list`.
    prefix VARCHAR(16) NOT NULL UNIQUE,
    -- Lowercase hex SHA-256 of the whole key.
    secret_hash CHAR(64) NOT NULL,
    -- What the key is for, for people.
    name VARCHAR(200),
    -- The organization the key acts for; NULL: a platform key, which may
    -- act for any organization.
    organization_id UUID,
    -- A comma-separated subset of `publish`, `read`, `admin`.
    scopes VARCHAR(100) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set by `busbar keys revoke`; a revoked key is refused.
    revoked_at TIMESTAMPTZ
);

CREATE INDEX idx_api_keys_org ON integrations.api_keys (organization_id);
