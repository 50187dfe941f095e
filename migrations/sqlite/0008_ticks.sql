-- Ticks (ARCHITECTURE.md, "Ticks"). On SQLite a tick is the highest seq
-- committed and a lane's cursor a seq, as before. Only the skip rule after a
-- re-enable changes form: it was "seq below skip_seq", it is now "seq at or
-- below skip_seq" (the snapshot's form on both databases).
UPDATE "integrations.integration_state" SET skip_seq = skip_seq - 1 WHERE skip_seq IS NOT NULL;

-- Partitioning versions (ARCHITECTURE.md, "Versioned partitioning").
CREATE TABLE "integrations.partitionings" (
    integration_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    order_by TEXT NOT NULL,
    lanes INTEGER NOT NULL,
    from_tick INTEGER NOT NULL,
    -- The seq of the tick, as text (the snapshot's form on SQLite).
    from_snapshot TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (integration_id, version)
);
ALTER TABLE "integrations.lanes" ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE INDEX "integrations.idx_deliveries_open_keys" ON "integrations.deliveries" (integration_id, lane, order_key, event_xid, event_seq)
    WHERE status IN ('pending', 'retrying', 'dead');
