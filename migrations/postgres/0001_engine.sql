-- busbar's own tables, in schema `integrations`.
--
-- The original Phase 7 spec's `events`, `candidate_employee_map` and
-- `employee_payroll_map` keep their columns and indexes. Their foreign keys
-- to `core.organizations` and `core.users` are left out: those tables belong
-- to the platform, not to busbar, and busbar must install into a database
-- that does not have them (docs/ARCHITECTURE.md, "Storage").

CREATE SCHEMA IF NOT EXISTS integrations;

-- Every event, published through busbar or inserted by a product in its own
-- transaction (the transactional outbox: leave `processed_at` NULL and
-- busbar routes the row).
CREATE TABLE integrations.events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL,
    source_product VARCHAR(50) NOT NULL,
    event_name VARCHAR(100) NOT NULL,
    event_data JSONB NOT NULL DEFAULT '{}',
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When busbar created the event's deliveries (NULL: not routed yet).
    processed_at TIMESTAMPTZ,
    -- Publish order, for routing outbox rows in order and for cursors.
    seq BIGSERIAL NOT NULL,
    -- A producer's Idempotency-Key header, unique per organization.
    idempotency_key VARCHAR(200),
    -- The event whose delivery emitted this one (NULL for published events).
    parent_id UUID
);

CREATE INDEX idx_events_org_product ON integrations.events (organization_id, source_product);
CREATE INDEX idx_events_created ON integrations.events (created_at DESC);
CREATE INDEX idx_events_org_seq ON integrations.events (organization_id, seq DESC);
CREATE INDEX idx_events_unrouted ON integrations.events (seq) WHERE processed_at IS NULL;
CREATE UNIQUE INDEX idx_events_idempotency ON integrations.events (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One event handed to one route of one integration.
CREATE TABLE integrations.deliveries (
    id UUID PRIMARY KEY,
    event_id UUID NOT NULL REFERENCES integrations.events (id) ON DELETE CASCADE,
    organization_id UUID NOT NULL,
    integration_id VARCHAR(100) NOT NULL,
    -- The route: the n-th route of the integration for this event name.
    route_event VARCHAR(100) NOT NULL,
    route_ordinal INTEGER NOT NULL DEFAULT 0,
    source_product VARCHAR(50) NOT NULL,
    target_product VARCHAR(50) NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'skipped', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Why it was skipped, or the last failure (with the step it happened at).
    last_error TEXT,
    error_step INTEGER,
    -- The generation that last ran it.
    generation BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    UNIQUE (event_id, integration_id, route_event, route_ordinal)
);

CREATE INDEX idx_deliveries_due ON integrations.deliveries (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX idx_deliveries_integration ON integrations.deliveries (integration_id, status);

-- Enabled/disabled as set through the API; survives restarts and reloads.
-- An integration runs when its YAML says `enabled: true` (the default) and
-- this table does not say `false`.
CREATE TABLE integrations.integration_state (
    integration_id VARCHAR(100) PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The original spec's mapping tables, with the unique keys the shipped
-- integrations upsert on.
CREATE TABLE integrations.candidate_employee_map (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL,
    candidate_id UUID NOT NULL,
    employee_id UUID NOT NULL,
    converted_by UUID,
    converted_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (organization_id, candidate_id)
);

CREATE INDEX idx_candidate_employee_map_org ON integrations.candidate_employee_map (organization_id);
CREATE INDEX idx_candidate_employee_map_candidate ON integrations.candidate_employee_map (candidate_id);

CREATE TABLE integrations.employee_payroll_map (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL,
    employee_id UUID NOT NULL,
    payroll_record_id UUID NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (organization_id, employee_id)
);

CREATE INDEX idx_employee_payroll_map_org ON integrations.employee_payroll_map (organization_id);

-- Wake busbar processes when events or deliveries appear, whoever wrote
-- them; a poll covers missed notifications.
CREATE FUNCTION integrations.notify_busbar() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('busbar_' || TG_TABLE_NAME, '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON integrations.events
    FOR EACH STATEMENT EXECUTE FUNCTION integrations.notify_busbar();
CREATE TRIGGER deliveries_notify AFTER INSERT ON integrations.deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION integrations.notify_busbar();
