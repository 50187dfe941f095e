-- One row per integration and minute: what the console's charts draw over
-- the last hour and the last day (applied per minute comes from
-- delivery_stats). Written once a minute by the first busbar process to
-- sample that minute; rows older than 8 days are pruned.
CREATE TABLE "integrations.integration_history" (
    integration_id TEXT NOT NULL,
    minute TEXT NOT NULL,
    backlog INTEGER NOT NULL,
    lag_seconds REAL NOT NULL,
    failures INTEGER NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (integration_id, minute)
);
CREATE INDEX "integrations.idx_integration_history_minute" ON "integrations.integration_history" (minute);
