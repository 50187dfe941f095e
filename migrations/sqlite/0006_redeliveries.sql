-- Redelivery by filter: what each request id did (see
-- migrations/postgres/0006_redeliveries.sql).
CREATE TABLE "integrations.redeliveries" (
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    events INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    bound_xid INTEGER NOT NULL,
    bound_seq INTEGER NOT NULL,
    progress_xid INTEGER NOT NULL,
    progress_seq INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (scope, request_id)
);

CREATE INDEX "integrations.idx_redeliveries_created" ON "integrations.redeliveries" (created_at);
