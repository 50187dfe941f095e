-- One row per integration and minute: what the console's charts draw over
-- the last hour and the last day (applied per minute comes from
-- delivery_stats). Written once a minute by the first busbar process to
-- sample that minute; rows older than 8 days are pruned.
CREATE TABLE integrations.integration_history (
    integration_id VARCHAR(100) NOT NULL,
    minute TIMESTAMPTZ NOT NULL,
    -- Events not passed by the lanes plus delivery rows pending or retrying.
    backlog BIGINT NOT NULL,
    -- Age of the oldest event not yet applied, in seconds.
    lag_seconds DOUBLE PRECISION NOT NULL,
    -- Delivery rows that failed (retrying or dead) during the minute.
    failures BIGINT NOT NULL,
    -- The integration's state and the live generation when sampled: their
    -- changes are marked on the charts' time axis.
    state VARCHAR(16) NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (integration_id, minute)
);
CREATE INDEX idx_integration_history_minute ON integrations.integration_history (minute);
