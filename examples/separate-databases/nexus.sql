-- Nexus's own PostgreSQL database (nexus_example): the HR records that
-- recruitiq-to-nexus writes. The table is examples/platform/postgres.sql's
-- hris.employees without its foreign key to core.organizations: the
-- organizations live in busbar's database, not here.
--
-- Idempotent: setup.sh runs it on every call, and tests/it/example_separate.rs
-- runs it into a throwaway database.

CREATE SCHEMA IF NOT EXISTS hris;

CREATE TABLE IF NOT EXISTS hris.employees (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    email VARCHAR(320) NOT NULL,
    phone VARCHAR(50),
    job_title VARCHAR(200),
    department VARCHAR(200),
    hire_date DATE,
    termination_date DATE,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, email)
);
