-- The reference benchmark's tables (../shared/bench/schema.sql) for MariaDB
-- 10.11: a product "schema" is a MariaDB database. UUIDs are MariaDB's
-- UUID type with UUID() defaults, JSONB is JSON (LONGTEXT checked by
-- json_valid), TIMESTAMP is DATETIME; the upsert's unique key
-- (organization_id, email) is created here, as peers.sh adds it on
-- PostgreSQL. The databases are named limit_core, limit_hris and
-- limit_integrations, so the run never touches a real `hris`; applied by
-- limit-batch.sh to fresh ones.
CREATE DATABASE limit_core;
CREATE DATABASE limit_hris;
CREATE DATABASE limit_integrations;
CREATE TABLE limit_core.organizations (id UUID PRIMARY KEY DEFAULT UUID(), name TEXT);
CREATE TABLE limit_core.users (id UUID PRIMARY KEY DEFAULT UUID(), organization_id UUID REFERENCES limit_core.organizations(id), email TEXT);
CREATE TABLE limit_core.product_subscriptions (organization_id UUID REFERENCES limit_core.organizations(id), product_id VARCHAR(100), status TEXT, PRIMARY KEY (organization_id, product_id));
CREATE TABLE limit_hris.employees (
  id UUID PRIMARY KEY DEFAULT UUID(),
  organization_id UUID NOT NULL REFERENCES limit_core.organizations(id),
  first_name TEXT, last_name TEXT, email VARCHAR(255), phone TEXT,
  hire_date DATE, status TEXT, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY employees_org_email (organization_id, email));
CREATE TABLE limit_integrations.events (
  id UUID PRIMARY KEY DEFAULT UUID(),
  organization_id UUID NOT NULL REFERENCES limit_core.organizations(id),
  source_product VARCHAR(50) NOT NULL, event_name VARCHAR(100) NOT NULL,
  event_data JSON NOT NULL, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), processed_at DATETIME(6),
  KEY idx_events_org_product (organization_id, source_product),
  KEY idx_events_created (created_at DESC));
CREATE TABLE limit_integrations.candidate_employee_map (
  id UUID PRIMARY KEY DEFAULT UUID(),
  organization_id UUID NOT NULL REFERENCES limit_core.organizations(id),
  candidate_id UUID NOT NULL, employee_id UUID NOT NULL,
  converted_by UUID REFERENCES limit_core.users(id),
  converted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY idx_candidate_employee_map_org (organization_id),
  KEY idx_candidate_employee_map_candidate (candidate_id));
INSERT INTO limit_core.organizations (id, name) VALUES ('11111111-1111-1111-1111-111111111111', 'Acme');
INSERT INTO limit_core.users (id, organization_id, email) VALUES ('22222222-2222-2222-2222-222222222222', '11111111-1111-1111-1111-111111111111', 'recruiter@acme.test');
INSERT INTO limit_core.product_subscriptions VALUES ('11111111-1111-1111-1111-111111111111', 'nexus', 'active');
