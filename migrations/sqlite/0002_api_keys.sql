-- API keys on SQLite: the same columns as on PostgreSQL (see
-- migrations/postgres/0002_api_keys.sql), UUIDs and times as text.
CREATE TABLE "integrations.api_keys" (
    id TEXT PRIMARY KEY NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    name TEXT,
    organization_id TEXT,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    revoked_at TEXT
);

CREATE INDEX "integrations.idx_api_keys_org" ON "integrations.api_keys" (organization_id);
