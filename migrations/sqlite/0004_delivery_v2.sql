-- Delivery v2 on SQLite: the same change as
-- migrations/postgres/0004_delivery_v2.sql. SQLite cannot change a table's
-- constraints in place, so `deliveries` (which referenced `events`) and
-- `events` are rebuilt, deliveries first: dropping `events` while a foreign
-- key still pointed at it would delete the deliveries with it.

CREATE TABLE "integrations.deliveries_v2" (
    id TEXT PRIMARY KEY NOT NULL,
    event_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    route_event TEXT NOT NULL,
    route_ordinal INTEGER NOT NULL DEFAULT 0,
    source_product TEXT NOT NULL,
    target_product TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'retrying', 'delivered', 'skipped', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_error TEXT,
    error_step INTEGER,
    generation INTEGER,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    completed_at TEXT,
    lane INTEGER NOT NULL DEFAULT 0,
    order_key TEXT,
    event_xid INTEGER NOT NULL DEFAULT 0,
    event_seq INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0
);

INSERT INTO "integrations.deliveries_v2" (id, event_id, organization_id, integration_id, route_event, route_ordinal,
    source_product, target_product, status, attempts, next_attempt_at, last_error, error_step, generation,
    created_at, updated_at, completed_at, event_seq)
SELECT d.id, d.event_id, d.organization_id, d.integration_id, d.route_event, d.route_ordinal,
       d.source_product, d.target_product,
       CASE WHEN d.status = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.status END,
       d.attempts, d.next_attempt_at, d.last_error, d.error_step, d.generation,
       d.created_at, d.updated_at, d.completed_at,
       COALESCE((SELECT e.seq FROM "integrations.events" e WHERE e.id = d.event_id), 0)
  FROM "integrations.deliveries" d;

DROP TABLE "integrations.deliveries";
ALTER TABLE "integrations.deliveries_v2" RENAME TO "integrations.deliveries";

CREATE INDEX "integrations.idx_deliveries_integration" ON "integrations.deliveries" (integration_id, status);
CREATE INDEX "integrations.idx_deliveries_open" ON "integrations.deliveries" (integration_id, lane, event_xid, event_seq)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX "integrations.idx_deliveries_dead_keys" ON "integrations.deliveries" (integration_id, order_key)
    WHERE status = 'dead';
CREATE INDEX "integrations.idx_deliveries_event" ON "integrations.deliveries" (organization_id, event_id);

CREATE TABLE "integrations.events_v2" (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id TEXT NOT NULL,
    source_product TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_data TEXT NOT NULL DEFAULT '{}',
    occurred_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    processed_at TEXT,
    idempotency_key TEXT,
    parent_id TEXT,
    -- Always 0 on SQLite: writers are serialised, so commit order is seq order.
    xid INTEGER NOT NULL DEFAULT 0,
    UNIQUE (organization_id, id)
);

INSERT INTO "integrations.events_v2" (seq, id, organization_id, source_product, event_name, event_data,
    occurred_at, created_at, processed_at, idempotency_key, parent_id)
SELECT seq, id, organization_id, source_product, event_name, event_data,
       occurred_at, created_at, processed_at, idempotency_key, parent_id
  FROM "integrations.events";

DROP TABLE "integrations.events";
ALTER TABLE "integrations.events_v2" RENAME TO "integrations.events";

CREATE INDEX "integrations.idx_events_org_product" ON "integrations.events" (organization_id, source_product);
CREATE INDEX "integrations.idx_events_created" ON "integrations.events" (created_at DESC);
CREATE INDEX "integrations.idx_events_org_seq" ON "integrations.events" (organization_id, seq DESC);
CREATE UNIQUE INDEX "integrations.idx_events_idempotency" ON "integrations.events" (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX "integrations.idx_events_parent" ON "integrations.events" (parent_id) WHERE parent_id IS NOT NULL;
-- A lane reads its integration's source in position order.
CREATE INDEX "integrations.idx_events_position" ON "integrations.events" (source_product, seq);

CREATE TABLE "integrations.lanes" (
    integration_id TEXT NOT NULL,
    lane INTEGER NOT NULL,
    cursor_xid INTEGER NOT NULL,
    cursor_seq INTEGER NOT NULL,
    origin_xid INTEGER NOT NULL,
    origin_seq INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration_id, lane)
);

INSERT INTO "integrations.lanes" (integration_id, lane, cursor_xid, cursor_seq, origin_xid, origin_seq)
SELECT i.integration_id, 0, 0, s.start, 0, s.start
  FROM (SELECT COALESCE((SELECT MIN(seq) - 1 FROM "integrations.events" WHERE processed_at IS NULL),
                        (SELECT MAX(seq) FROM "integrations.events"), 0) AS start) s, (SELECT DISTINCT integration_id FROM "integrations.deliveries"
        UNION SELECT integration_id FROM "integrations.integration_state") i;

CREATE TABLE "integrations.delivery_stats" (
    integration_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    bucket TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (integration_id, organization_id, bucket)
);

CREATE TABLE "integrations.integration_state_v2" (
    integration_id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL DEFAULT 'enabled' CHECK (state IN ('enabled', 'paused', 'disabled')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    skip_xid INTEGER,
    skip_seq INTEGER
);
INSERT INTO "integrations.integration_state_v2" (integration_id, state, updated_at)
SELECT integration_id, CASE WHEN enabled THEN 'enabled' ELSE 'disabled' END, updated_at
  FROM "integrations.integration_state";
DROP TABLE "integrations.integration_state";
ALTER TABLE "integrations.integration_state_v2" RENAME TO "integrations.integration_state";

CREATE TABLE "integrations.definitions" (
    integration_id TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT,
    loaded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    loaded_by TEXT
);

CREATE TABLE "integrations.nodes" (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    heartbeat_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    generation INTEGER,
    workers INTEGER
);
