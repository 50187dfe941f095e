-- busbar's own tables on SQLite.
--
-- SQLite has no schemas: a schema-qualified name becomes one quoted table
-- name with the dot inside, so `integrations.events` is the table
-- "integrations.events" (ATTACHed databases would break the atomicity of
-- transactions across them in WAL mode). UUIDs are stored as text,
-- timestamps as RFC 3339 text in UTC with milliseconds
-- (`2026-11-28T09:30:00.000Z`), JSON as text.

CREATE TABLE "integrations.events" (
    -- Publish order, for routing outbox rows in order and for cursors.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id TEXT NOT NULL,
    source_product TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_data TEXT NOT NULL DEFAULT '{}',
    occurred_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    processed_at TEXT,
    idempotency_key TEXT,
    parent_id TEXT
);

CREATE INDEX "integrations.idx_events_org_product" ON "integrations.events" (organization_id, source_product);
CREATE INDEX "integrations.idx_events_created" ON "integrations.events" (created_at DESC);
CREATE INDEX "integrations.idx_events_org_seq" ON "integrations.events" (organization_id, seq DESC);
CREATE INDEX "integrations.idx_events_unrouted" ON "integrations.events" (seq) WHERE processed_at IS NULL;
CREATE UNIQUE INDEX "integrations.idx_events_idempotency" ON "integrations.events" (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE "integrations.deliveries" (
    id TEXT PRIMARY KEY NOT NULL,
    event_id TEXT NOT NULL REFERENCES "integrations.events" (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    route_event TEXT NOT NULL,
    route_ordinal INTEGER NOT NULL DEFAULT 0,
    source_product TEXT NOT NULL,
    target_product TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'skipped', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_error TEXT,
    error_step INTEGER,
    generation INTEGER,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    completed_at TEXT,
    UNIQUE (event_id, integration_id, route_event, route_ordinal)
);

CREATE INDEX "integrations.idx_deliveries_due" ON "integrations.deliveries" (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX "integrations.idx_deliveries_integration" ON "integrations.deliveries" (integration_id, status);

CREATE TABLE "integrations.integration_state" (
    integration_id TEXT PRIMARY KEY NOT NULL,
    enabled INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE "integrations.candidate_employee_map" (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL,
    candidate_id UUID NOT NULL,
    employee_id UUID NOT NULL,
    converted_by UUID,
    converted_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (organization_id, candidate_id)
);

CREATE INDEX "integrations.idx_candidate_employee_map_org" ON "integrations.candidate_employee_map" (organization_id);
CREATE INDEX "integrations.idx_candidate_employee_map_candidate" ON "integrations.candidate_employee_map" (candidate_id);

CREATE TABLE "integrations.employee_payroll_map" (
    id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL,
    employee_id UUID NOT NULL,
    payroll_record_id UUID NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (organization_id, employee_id)
);

CREATE INDEX "integrations.idx_employee_payroll_map_org" ON "integrations.employee_payroll_map" (organization_id);
