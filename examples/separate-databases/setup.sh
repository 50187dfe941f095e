#!/usr/bin/env bash
# Creates the databases of examples/separate-databases on a local
# PostgreSQL and MariaDB, and prints the `export` lines busbar needs:
#
#   PostgreSQL  busbar_example   busbar's own database (empty here: `busbar
#                                serve --dev` migrates it and seeds core.*)
#   PostgreSQL  nexus_example    nexus's database: schema hris (nexus.sql)
#   MariaDB     payroll          paylinq's database (paylinq.sql)
#
# Safe to run again: it creates only what is missing and changes nothing
# that exists. `setup.sh --reset` drops the three databases first (and
# everything in them), to start the walk-through over.
#
# Where the servers are (defaults: the local ones, trust / no password):
#   PG_HOST PG_PORT PG_USER                        (127.0.0.1, 5432, postgres)
#   MARIADB_HOST MARIADB_PORT MARIADB_USER         (127.0.0.1, 3306, root)
#   MARIADB_PASSWORD                               (none)
# The users must be allowed to create databases.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_USER="${PG_USER:-postgres}"
MARIADB_HOST="${MARIADB_HOST:-127.0.0.1}"
MARIADB_PORT="${MARIADB_PORT:-3306}"
MARIADB_USER="${MARIADB_USER:-root}"

reset=false
case "${1:-}" in
  "") ;;
  --reset) reset=true ;;
  *) echo "usage: $0 [--reset]" >&2; exit 2 ;;
esac

# psql on database $1, stopping at the first error, printing no notices.
pg() {
  local database="$1"
  shift
  PGOPTIONS='--client-min-messages=warning' \
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$database" "$@"
}

# The MariaDB client (`mariadb`, or `mysql` on older installations).
my() {
  local client=mariadb
  command -v mariadb >/dev/null 2>&1 || client=mysql
  if [ -n "${MARIADB_PASSWORD:-}" ]; then
    MYSQL_PWD="$MARIADB_PASSWORD" "$client" -h "$MARIADB_HOST" -P "$MARIADB_PORT" -u "$MARIADB_USER" "$@"
  else
    "$client" -h "$MARIADB_HOST" -P "$MARIADB_PORT" -u "$MARIADB_USER" "$@"
  fi
}

# Creates PostgreSQL database $1 unless it exists.
pg_create() {
  if [ "$(pg postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$1'")" != 1 ]; then
    pg postgres -c "CREATE DATABASE $1"
    echo "created PostgreSQL database $1" >&2
  else
    echo "PostgreSQL database $1 exists" >&2
  fi
}

if $reset; then
  # WITH (FORCE) (PostgreSQL 13 or later) closes other sessions on them
  # first (a busbar still running, a psql): stop busbar before resetting.
  for database in busbar_example nexus_example; do
    pg postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)"
  done
  my -e "DROP DATABASE IF EXISTS payroll"
  echo "dropped busbar_example, nexus_example (PostgreSQL) and payroll (MariaDB)" >&2
fi

# busbar's own database: busbar creates its tables (migrations) and, with
# `serve --dev`, the example platform and its seeded organization.
pg_create busbar_example

# nexus's database and its table.
pg_create nexus_example
pg nexus_example -f "$here/nexus.sql"

# paylinq's database and its tables. utf8mb4: full UTF-8, as busbar's
# sessions speak it.
my -e "CREATE DATABASE IF NOT EXISTS payroll CHARACTER SET utf8mb4"
my payroll < "$here/paylinq.sql"
echo "MariaDB database payroll has its tables" >&2

pg_url="postgres://$PG_USER@$PG_HOST:$PG_PORT"
if [ -n "${MARIADB_PASSWORD:-}" ]; then
  # Percent-encoded, as a URL's user part needs.
  password="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$MARIADB_PASSWORD")"
  my_url="mysql://$MARIADB_USER:$password@$MARIADB_HOST:$MARIADB_PORT/payroll"
else
  my_url="mysql://$MARIADB_USER@$MARIADB_HOST:$MARIADB_PORT/payroll"
fi

echo >&2
echo "Ready. Paste these into the shell that runs busbar:" >&2
echo "export BUSBAR_DATABASE_URL=$pg_url/busbar_example"
echo "export NEXUS_DATABASE_URL=$pg_url/nexus_example"
echo "export PAYLINQ_DATABASE_URL=$my_url"
