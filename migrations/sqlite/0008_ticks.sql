-- Ticks (ARCHITECTURE.md, "Ticks"). On SQLite a tick is the highest seq
-- committed and a lane's cursor a seq, as before. Only the skip rule after a
-- re-enable changes form: it was "seq below skip_seq", it is now "seq at or
-- below skip_seq" (the snapshot's form on both databases).
UPDATE "integrations.integration_state" SET skip_seq = skip_seq - 1 WHERE skip_seq IS NOT NULL;
