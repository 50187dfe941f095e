-- nexus's tables in MariaDB: a product schema is a MariaDB database, so the
-- integration's `hris.employees` is database `hris` (dropped and made anew
-- by run.sh); types as benches/mariadb/schema.sql.
CREATE DATABASE hris;
CREATE TABLE hris.employees (
  id UUID PRIMARY KEY DEFAULT UUID(), organization_id UUID NOT NULL,
  first_name TEXT, last_name TEXT, email VARCHAR(255), phone TEXT, hire_date DATE, status TEXT,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY employees_org_email (organization_id, email));
CREATE TABLE hris.candidate_employee_map (
  id UUID PRIMARY KEY DEFAULT UUID(), organization_id UUID NOT NULL,
  candidate_id UUID NOT NULL, employee_id UUID NOT NULL, converted_by UUID,
  converted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY map_org_candidate (organization_id, candidate_id));
