-- This installation's identity: one row, made once. The progress rows a
-- lane keeps in another database (databases.yaml) are keyed by it, so two
-- busbar installations writing into one product database with the same
-- integration ids never read each other's progress (ARCHITECTURE.md,
-- "Exactly once into another database, without XA"). A restore of this
-- database keeps it: a restored installation is the same installation.
CREATE TABLE "integrations.installation" (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO "integrations.installation" (id)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-' ||
             substr('89ab', 1 + (abs(random()) % 4), 1) || substr(h, 18, 3) || '-' || substr(h, 21, 12))
FROM (SELECT hex(randomblob(16)) AS h);
