-- The events a delivery emitted, found from their parent (the API's event
-- detail lists them). Only emitted events have a parent, so the index
-- stays small.
CREATE INDEX idx_events_parent ON integrations.events (parent_id) WHERE parent_id IS NOT NULL;
