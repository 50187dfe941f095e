-- The operations console's sign-in sessions (`/console`).
--
-- A session is a random token held in an HttpOnly cookie; only its SHA-256
-- is stored, so a copy of this table signs nobody in. Every request joins
-- the session to its API key, so revoking the key ends the session, and
-- every busbar process on the database sees the same sessions.
CREATE TABLE integrations.console_sessions (
    -- Lowercase hex SHA-256 of the cookie's token.
    token_hash CHAR(64) PRIMARY KEY,
    -- The API key the operator signed in with; its scopes and organization
    -- are read from it at every request.
    key_id UUID NOT NULL REFERENCES integrations.api_keys (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- After this the session is refused (and deleted at a later sign-in).
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_console_sessions_expiry ON integrations.console_sessions (expires_at);

-- Indexes for the console's and the API's reads (docs/CONSOLE.md, "Speed";
-- src/console/data.rs names, at each query, the index it uses).
-- A platform key's newest events (`ORDER BY seq DESC`).
CREATE INDEX idx_events_seq ON integrations.events (seq);
-- An organization's events in a time range, newest first.
CREATE INDEX idx_events_org_created ON integrations.events (organization_id, created_at DESC);
-- A payload field, searched by containment (`event_data @> '{"a": {"b": 1}}'`).
CREATE INDEX idx_events_data ON integrations.events USING GIN (event_data jsonb_path_ops);
-- The events with a delivery in an exception state (the search's state
-- filter): rows in those states are few.
CREATE INDEX idx_deliveries_exceptions ON integrations.deliveries (status, organization_id, event_id)
    WHERE status <> 'delivered';
