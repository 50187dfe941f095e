-- Batches a lane has applied in its integration's target database when
-- that is another database (databases.yaml): the target's progress table
-- holds the same number, committed with the batch's writes, and the two
-- are compared at every batch (ARCHITECTURE.md, "Exactly once into
-- another database, without XA"). Always 0 for integrations that write
-- into busbar's own database.
ALTER TABLE "integrations.lanes" ADD COLUMN batch_seq BIGINT NOT NULL DEFAULT 0;
