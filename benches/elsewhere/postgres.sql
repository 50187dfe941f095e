-- nexus's tables in a PostgreSQL database of its own (bench_nexus): those
-- of ../shared/bench/schema.sql, without the foreign keys to core (in
-- busbar's database), the map in nexus's schema.
CREATE SCHEMA hris;
CREATE TABLE hris.employees (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(), organization_id UUID NOT NULL,
  first_name TEXT, last_name TEXT, email TEXT, phone TEXT, hire_date DATE, status TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (organization_id, email));
CREATE TABLE hris.candidate_employee_map (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(), organization_id UUID NOT NULL,
  candidate_id UUID NOT NULL, employee_id UUID NOT NULL, converted_by UUID,
  converted_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (organization_id, candidate_id));
