-- Ticks (ARCHITECTURE.md, "Ticks"): which events a lane may read is decided
-- by stored snapshots, not by the oldest running transaction. A lane's
-- cursor becomes the batch it is in, (batch_from, batch_to], and the
-- position (cursor_xid, cursor_seq) of the last event of it that it passed.
--
-- Upgrading keeps every cursor's meaning exactly: a v2 cursor (x, s) passed
-- the events at or below (x, s), all of them committed; it becomes the
-- batch (snapshot "x:x:", now] at position (x, s).

CREATE TABLE integrations.ticks (
    id BIGINT PRIMARY KEY,
    snapshot pg_snapshot NOT NULL,
    made_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO integrations.ticks (id, snapshot) VALUES (1, pg_current_snapshot());

-- Rows from before delivery v2 had xid 0, which is not a transaction id:
-- they get 3, the first normal one (below every real transaction's).
UPDATE integrations.events SET xid = 3 WHERE xid < 3;
UPDATE integrations.deliveries SET event_xid = 3 WHERE event_xid < 3;

ALTER TABLE integrations.lanes
    ADD COLUMN batch_from pg_snapshot,
    ADD COLUMN batch_to pg_snapshot,
    ADD COLUMN batch_to_tick BIGINT,
    -- Events this snapshot sees (or at or below the origin position) were
    -- published before the lane existed: they are not the lane's.
    ADD COLUMN origin_snapshot pg_snapshot;
UPDATE integrations.lanes SET
    cursor_xid = GREATEST(cursor_xid, 3),
    batch_from = (GREATEST(cursor_xid, 3)::text || ':' || GREATEST(cursor_xid, 3)::text || ':')::pg_snapshot,
    batch_to = (SELECT snapshot FROM integrations.ticks WHERE id = 1),
    batch_to_tick = 1,
    origin_xid = GREATEST(origin_xid, 3),
    origin_snapshot = '3:3:'::pg_snapshot;
ALTER TABLE integrations.lanes
    ALTER COLUMN batch_from SET NOT NULL,
    ALTER COLUMN batch_to SET NOT NULL,
    ALTER COLUMN batch_to_tick SET NOT NULL,
    ALTER COLUMN origin_snapshot SET NOT NULL;

-- After a re-enable: events this snapshot sees were published while the
-- integration was disabled (v2 kept "below (x, 0)": the snapshot "x:x:").
ALTER TABLE integrations.integration_state ADD COLUMN skip_snapshot pg_snapshot;
UPDATE integrations.integration_state
   SET skip_snapshot = (GREATEST(skip_xid, 3)::text || ':' || GREATEST(skip_xid, 3)::text || ':')::pg_snapshot
 WHERE skip_xid IS NOT NULL;
ALTER TABLE integrations.integration_state DROP COLUMN skip_xid, DROP COLUMN skip_seq;

-- Partitioning versions (ARCHITECTURE.md, "Versioned partitioning"): which
-- order key and lane count an integration's lanes read with, from which
-- tick on. A change of `order_by` adds a version; the lanes read the old
-- one up to its tick, then all switch together.
CREATE TABLE integrations.partitionings (
    integration_id VARCHAR(100) NOT NULL,
    version INTEGER NOT NULL,
    -- The order key, as JSON (`compile::OrderKey`).
    order_by TEXT NOT NULL,
    lanes INTEGER NOT NULL,
    -- Events this tick sees are read with the previous version.
    from_tick BIGINT NOT NULL,
    from_snapshot pg_snapshot NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, version)
);
-- The version a lane reads with.
ALTER TABLE integrations.lanes ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- Runnable work is chosen per key: a lane's open rows whose key no earlier
-- row holds (`store::lanes::open_rows`).
CREATE INDEX idx_deliveries_open_keys ON integrations.deliveries (integration_id, lane, order_key, event_xid, event_seq)
    WHERE status IN ('pending', 'retrying', 'dead');

-- Which PostgreSQL cluster the positions (ticks, cursors, events' xids)
-- belong to: busbar refuses to run on another (a restore, a logical move)
-- until `busbar rebase` (ARCHITECTURE.md, "Cluster identity").
CREATE TABLE integrations.cluster (
    system_identifier TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO integrations.cluster (system_identifier)
SELECT system_identifier::text FROM pg_control_system();
