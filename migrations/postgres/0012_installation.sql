-- This installation's identity: one row, made once. The progress rows a
-- lane keeps in another database (databases.yaml) are keyed by it, so two
-- busbar installations writing into one product database with the same
-- integration ids never read each other's progress (ARCHITECTURE.md,
-- "Exactly once into another database, without XA"). A restore of this
-- database keeps it: a restored installation is the same installation.
CREATE TABLE integrations.installation (
    id UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO integrations.installation (id) VALUES (gen_random_uuid());
