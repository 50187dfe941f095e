-- Delivery v2 (ARCHITECTURE.md, "Delivery (v2)"): the events table is a log
-- read by lanes with cursors, and `deliveries` holds only the exceptions
-- (skipped, retrying, pending behind a blocked key, dead, and delivered
-- after having been one of those).
--
-- Upgrading keeps every event and every delivery: events the previous
-- engine routed (processed_at set) are not read again by lanes; their
-- pending deliveries carry on as rows; events not routed yet (outbox rows
-- with processed_at NULL) are read by the new lanes.

-- Events: ids are unique per organization; the position is (xid, seq).
-- The deliveries' foreign key to events(id), their unique key on
-- (event_id, ...) and their status check go (PostgreSQL named them).
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'integrations.deliveries'::regclass AND contype IN ('f', 'u', 'c')
    LOOP
        EXECUTE format('ALTER TABLE integrations.deliveries DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$$;
ALTER TABLE integrations.events DROP CONSTRAINT events_pkey;
ALTER TABLE integrations.events ADD PRIMARY KEY (organization_id, id);
-- Rows from before the upgrade get 0: every one of them is committed.
ALTER TABLE integrations.events ADD COLUMN xid BIGINT NOT NULL DEFAULT 0;
-- Every later row, whoever inserts it, gets its transaction's id.
ALTER TABLE integrations.events ALTER COLUMN xid SET DEFAULT (pg_current_xact_id()::text::bigint);
-- A lane reads its integration's source in position order.
CREATE INDEX idx_events_position ON integrations.events (source_product, xid, seq);
-- Replaced by lanes: every new row has processed_at NULL.
DROP INDEX integrations.idx_events_unrouted;

-- Deliveries: exceptions only.
UPDATE integrations.deliveries SET status = 'retrying' WHERE status = 'pending' AND attempts > 0;
ALTER TABLE integrations.deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'retrying', 'delivered', 'skipped', 'dead'));
-- The lane the delivery belongs to, its order key (NULL for deliveries made
-- before the upgrade: they block nothing) and its event's position.
ALTER TABLE integrations.deliveries ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
ALTER TABLE integrations.deliveries ADD COLUMN order_key TEXT;
ALTER TABLE integrations.deliveries ADD COLUMN event_xid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE integrations.deliveries ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
-- Incremented by each redelivery, so a redelivered emit makes a new event.
ALTER TABLE integrations.deliveries ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
UPDATE integrations.deliveries d SET event_seq = e.seq
  FROM integrations.events e WHERE e.id = d.event_id AND e.organization_id = d.organization_id;
DROP INDEX integrations.idx_deliveries_due;
-- A lane's open rows, in position order (blocked keys, due retries).
CREATE INDEX idx_deliveries_open ON integrations.deliveries (integration_id, lane, event_xid, event_seq)
    WHERE status IN ('pending', 'retrying');
-- Dead rows of a key (for `on_dead: block`).
CREATE INDEX idx_deliveries_dead_keys ON integrations.deliveries (integration_id, order_key)
    WHERE status = 'dead';
-- An event's deliveries (event detail).
CREATE INDEX idx_deliveries_event ON integrations.deliveries (organization_id, event_id);

-- Lanes: one row per (integration, lane) with its cursor. The row's lock is
-- the right to work the lane.
CREATE TABLE integrations.lanes (
    integration_id VARCHAR(100) NOT NULL,
    lane INTEGER NOT NULL,
    -- The position of the last event the lane has passed.
    cursor_xid BIGINT NOT NULL,
    cursor_seq BIGINT NOT NULL,
    -- Where the lane started: events at or below it are not the lane's
    -- (published before the integration existed).
    origin_xid BIGINT NOT NULL,
    origin_seq BIGINT NOT NULL,
    -- Deliveries that succeeded on their first pass (they have no row).
    delivered BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, lane)
);

-- Lanes of the integrations that exist now start after the last event the
-- previous engine routed (or before the first it had not).
INSERT INTO integrations.lanes (integration_id, lane, cursor_xid, cursor_seq, origin_xid, origin_seq)
SELECT i.integration_id, l.lane, 0, s.start, 0, s.start
  FROM (SELECT COALESCE((SELECT MIN(seq) - 1 FROM integrations.events WHERE processed_at IS NULL),
                        (SELECT MAX(seq) FROM integrations.events), 0) AS start) s, (SELECT DISTINCT integration_id FROM integrations.deliveries
        UNION SELECT integration_id FROM integrations.integration_state) i
 CROSS JOIN generate_series(0, 7) AS l(lane);

-- Deliveries by integration, organization and minute: how the status API
-- and the console count deliveries that have no row. Buckets older than a
-- week are pruned.
CREATE TABLE integrations.delivery_stats (
    integration_id VARCHAR(100) NOT NULL,
    organization_id UUID NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (integration_id, organization_id, bucket)
);

-- Integration states: enabled, paused or disabled.
ALTER TABLE integrations.integration_state ADD COLUMN state VARCHAR(16) NOT NULL DEFAULT 'enabled'
    CHECK (state IN ('enabled', 'paused', 'disabled'));
UPDATE integrations.integration_state SET state = CASE WHEN enabled THEN 'enabled' ELSE 'disabled' END;
ALTER TABLE integrations.integration_state DROP COLUMN enabled;
-- After a re-enable: events below this position were published while the
-- integration was disabled and are skipped.
ALTER TABLE integrations.integration_state ADD COLUMN skip_xid BIGINT;
ALTER TABLE integrations.integration_state ADD COLUMN skip_seq BIGINT;

-- Which definition of each integration is current: the last process to
-- load a configuration records every integration's fingerprint (NULL:
-- removed). A process works an integration only when it agrees.
CREATE TABLE integrations.definitions (
    integration_id VARCHAR(100) PRIMARY KEY,
    fingerprint VARCHAR(64),
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    loaded_by VARCHAR(200)
);

-- busbar processes sharing the database, for the status API.
CREATE TABLE integrations.nodes (
    id UUID PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    generation BIGINT,
    workers INTEGER
);

-- Wake workers when an integration's state changes or a delivery is
-- replayed (deliveries' INSERT trigger already wakes them).
CREATE TRIGGER integration_state_notify AFTER INSERT OR UPDATE ON integrations.integration_state
    FOR EACH STATEMENT EXECUTE FUNCTION integrations.notify_busbar();
