-- The events a delivery emitted, found from their parent (see
-- migrations/postgres/0003_event_children.sql).
CREATE INDEX "integrations.idx_events_parent" ON "integrations.events" (parent_id) WHERE parent_id IS NOT NULL;
