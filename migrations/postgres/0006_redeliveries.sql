-- Redelivery by filter (`POST /api/integrations/{integration}/redeliver`,
-- `busbar redeliver`, the console): what each request id did, so that the
-- same id answers with the recorded result instead of redelivering again,
-- and a run that stopped half way (a crash between two chunks) is resumed
-- from where it stopped by the next call with the same id. Done records
-- are forgotten after seven days.
CREATE TABLE integrations.redeliveries (
    -- Whose request id it is: 'platform' (platform keys, the command
    -- line) or the organization's id (an organization key's).
    scope VARCHAR(40) NOT NULL,
    request_id VARCHAR(200) NOT NULL,
    integration_id VARCHAR(100) NOT NULL,
    -- The filter, normalized: the same id with another filter is refused.
    filter JSONB NOT NULL,
    state VARCHAR(16) NOT NULL CHECK (state IN ('running', 'done')),
    -- Events and deliveries redelivered so far.
    events BIGINT NOT NULL DEFAULT 0,
    deliveries BIGINT NOT NULL DEFAULT 0,
    -- Events above this position had not been passed by the integration's
    -- lanes when it started: they are not its.
    bound_xid BIGINT NOT NULL,
    bound_seq BIGINT NOT NULL,
    -- The position of the last event done: a resumed run starts after it.
    progress_xid BIGINT NOT NULL,
    progress_seq BIGINT NOT NULL,
    -- The run working it; a run silent for two minutes is taken over.
    run_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (scope, request_id)
);

CREATE INDEX idx_redeliveries_created ON integrations.redeliveries (created_at);
