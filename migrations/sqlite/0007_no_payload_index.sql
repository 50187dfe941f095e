-- Nothing to do on SQLite: the payload index dropped on PostgreSQL by this
-- migration never existed here (the numbering stays in step).
SELECT 1;
