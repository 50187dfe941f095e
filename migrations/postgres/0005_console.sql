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
