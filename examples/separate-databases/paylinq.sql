-- Paylinq's own MariaDB database (`payroll`): the payroll tables that
-- nexus-to-paylinq and recruitiq-to-paylinq write, in MariaDB's types.
-- A MariaDB "schema" is a database, so the integrations' `payroll.x` is
-- table `x` of database `payroll`. The names here are unqualified: run it
-- in the database (`mariadb payroll < paylinq.sql`), as setup.sh does.
--
-- Translated from examples/platform/postgres.sql: UUIDs are CHAR(36) (the
-- text busbar writes; MySQL 8 has no UUID type), the row ids are
-- AUTO_INCREMENT integers (no integration reads them), NUMERIC is
-- DECIMAL, TIMESTAMPTZ is DATETIME(6) (busbar's sessions are in UTC), and
-- there is no foreign key to core.organizations, which is in busbar's
-- database.
--
-- Idempotent: setup.sh runs it on every call, and
-- tests/it/example_separate.rs runs it into a throwaway database.

CREATE TABLE IF NOT EXISTS employee_records (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    organization_id CHAR(36) NOT NULL,
    employee_id CHAR(36) NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    email VARCHAR(320) NOT NULL,
    salary DECIMAL(12, 2),
    currency CHAR(3) NOT NULL DEFAULT 'EUR',
    pay_frequency VARCHAR(20) NOT NULL DEFAULT 'monthly',
    start_date DATE,
    end_date DATE,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY employee (organization_id, employee_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS new_hires (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    organization_id CHAR(36) NOT NULL,
    candidate_id CHAR(36) NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    email VARCHAR(320) NOT NULL,
    start_date DATE,
    salary DECIMAL(12, 2),
    currency CHAR(3) NOT NULL DEFAULT 'EUR',
    pay_frequency VARCHAR(20) NOT NULL DEFAULT 'monthly',
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY candidate (organization_id, candidate_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
