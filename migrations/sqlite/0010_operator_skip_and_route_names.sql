-- An operator's skip of a dead delivery: the reason they gave and who they
-- were (the API key's name, or `cli`). The failure that killed it stays in
-- last_error.
ALTER TABLE "integrations.deliveries" ADD COLUMN skip_reason TEXT;
ALTER TABLE "integrations.deliveries" ADD COLUMN skipped_by TEXT;
-- A route's stable identity: its `name:` in the file; NULL for the one
-- unnamed route of its event. Rows find their route by it, never by
-- position, so adding or moving a route cannot redirect them.
ALTER TABLE "integrations.deliveries" ADD COLUMN route_name VARCHAR(100);
