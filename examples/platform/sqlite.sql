-- The example platform the shipped integrations write to: organizations,
-- users and product subscriptions (core), HR records (hris, Nexus) and
-- payroll (payroll, Paylinq). Applied by `busbar serve --dev` and the tests,
-- never by `busbar migrate`: a real deployment has its own tables.
--
-- SQLite version of examples/platform/postgres.sql: schema-qualified names
-- are quoted table names with a dot ("hris.employees"), UUIDs and dates are
-- text; the column types are declared as in PostgreSQL so that busbar
-- converts values the same way.

CREATE TABLE IF NOT EXISTS "core.organizations" (
    id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    name VARCHAR(200) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS "core.users" (
    id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL REFERENCES "core.organizations" (id),
    email VARCHAR(320) NOT NULL,
    name VARCHAR(200),
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS "core.product_subscriptions" (
    id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL REFERENCES "core.organizations" (id),
    product_id VARCHAR(50) NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (organization_id, product_id)
);

CREATE TABLE IF NOT EXISTS "hris.employees" (
    id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL REFERENCES "core.organizations" (id),
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    email VARCHAR(320) NOT NULL,
    phone VARCHAR(50),
    job_title VARCHAR(200),
    department VARCHAR(200),
    hire_date DATE,
    termination_date DATE,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (organization_id, email)
);

CREATE TABLE IF NOT EXISTS "payroll.employee_records" (
    id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL REFERENCES "core.organizations" (id),
    employee_id UUID NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    email VARCHAR(320) NOT NULL,
    salary NUMERIC(12, 2),
    currency CHAR(3) NOT NULL DEFAULT 'EUR',
    pay_frequency VARCHAR(20) NOT NULL DEFAULT 'monthly',
    start_date DATE,
    end_date DATE,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (organization_id, employee_id)
);

CREATE TABLE IF NOT EXISTS "payroll.new_hires" (
    id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
    organization_id UUID NOT NULL REFERENCES "core.organizations" (id),
    candidate_id UUID NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    email VARCHAR(320) NOT NULL,
    start_date DATE,
    salary NUMERIC(12, 2),
    currency CHAR(3) NOT NULL DEFAULT 'EUR',
    pay_frequency VARCHAR(20) NOT NULL DEFAULT 'monthly',
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (organization_id, candidate_id)
);
