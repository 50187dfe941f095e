-- The operations console's sign-in sessions (see
-- migrations/postgres/0005_console.sql): only the token's SHA-256 is stored.
CREATE TABLE "integrations.console_sessions" (
    token_hash TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL REFERENCES "integrations.api_keys" (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at TEXT NOT NULL
);

CREATE INDEX "integrations.idx_console_sessions_expiry" ON "integrations.console_sessions" (expires_at);

-- Indexes for the console's reads (see migrations/postgres/0005_console.sql;
-- SQLite's `seq` is the rowid, and it has no index for a payload field).
CREATE INDEX "integrations.idx_events_org_created" ON "integrations.events" (organization_id, created_at DESC);
CREATE INDEX "integrations.idx_deliveries_exceptions" ON "integrations.deliveries" (status, organization_id, event_id)
    WHERE status <> 'delivered';
