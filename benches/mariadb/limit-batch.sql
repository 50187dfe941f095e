-- The batched limit on MariaDB: ../shared/bench/limit-batch.pgbench's work,
-- 100 events per transaction, one statement per table (events, the
-- subscription check, employees, the candidate→employee map). @n is set by
-- limit-batch.sh before each transaction (pgbench's `\set n random(...)`);
-- seq_1_to_100 is MariaDB's sequence engine (generate_series(1, 100)), which
-- needs a current database: the clients connect to limit_integrations.
-- MariaDB has no data-modifying CTE (PostgreSQL's `WITH e AS (INSERT …
-- RETURNING id)`), so the map reads the employees just upserted back by
-- their unique key: still one statement per table.
BEGIN;
INSERT INTO limit_integrations.events (organization_id, source_product, event_name, event_data) SELECT '11111111-1111-1111-1111-111111111111', 'recruitiq', 'candidate.hired', JSON_OBJECT('candidate', JSON_OBJECT('id', UUID(), 'firstName', 'Ada', 'lastName', 'Lovelace', 'email', CONCAT('ada', @n * 1000 + g.seq, '@acme.test'), 'phone', '+1555'), 'hiredBy', '22222222-2222-2222-2222-222222222222') FROM seq_1_to_100 g;
SELECT 1 FROM limit_core.product_subscriptions WHERE organization_id = '11111111-1111-1111-1111-111111111111' AND product_id = 'nexus' AND status = 'active';
INSERT INTO limit_hris.employees (organization_id, first_name, last_name, email, phone, hire_date, status) SELECT '11111111-1111-1111-1111-111111111111', 'Ada', 'Lovelace', CONCAT('ada', @n * 1000 + g.seq, '@acme.test'), '+1555', CURDATE(), 'active' FROM seq_1_to_100 g ON DUPLICATE KEY UPDATE first_name = VALUES(first_name);
INSERT INTO limit_integrations.candidate_employee_map (organization_id, candidate_id, employee_id, converted_by) SELECT '11111111-1111-1111-1111-111111111111', UUID(), e.id, '22222222-2222-2222-2222-222222222222' FROM seq_1_to_100 g JOIN limit_hris.employees e ON e.organization_id = '11111111-1111-1111-1111-111111111111' AND e.email = CONCAT('ada', @n * 1000 + g.seq, '@acme.test');
COMMIT;
