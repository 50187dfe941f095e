#!/usr/bin/env bash
# Outbox source throughput (issue 17): does busbar move rows out of a
# product's `busbar_outbox.events` at least half as fast as pgbench can
# insert them?
#
#   cargo build --release
#   benches/outbox_source.sh            # BUSBAR=target/release/busbar by default
#
# 1. pgbench alone inserts single-row transactions into the outbox for
#    $SECONDS_RUN seconds: the insert rate.
# 2. busbar serve runs (an integrations directory with only databases.yaml:
#    the mover is measured, not delivery) while pgbench inserts again for
#    the same time: the rows moved into busbar's log in that window, per
#    second, against step 1's rate. Target: a ratio of at least 0.5.
#
# Measured (2026-12-07, 2 shared cores, PostgreSQL local, the *debug*
# binary, 4 clients, 10 s): pgbench alone 10,702 inserts/s; beside busbar
# 6,757 inserts/s while busbar moved 6,528 rows/s (414 left at the end):
# 0.61 of pgbench alone. A release binary has not been measured.
#
# Needs psql and pgbench, and a server that lets $ADMIN create databases.
# Do not run it while a build runs on the same machine.
set -euo pipefail

ADMIN=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BUSBAR=${BUSBAR:-${CARGO_TARGET_DIR:-target}/release/busbar}
SECONDS_RUN=${SECONDS_RUN:-10}
CLIENTS=${CLIENTS:-4}
BASE=${ADMIN%/*}
OWN=busbar_bench_own_$$
PRODUCT=busbar_bench_product_$$
WORK=$(mktemp -d)
SERVE_PID=

cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $OWN WITH (FORCE)" -c "DROP DATABASE IF EXISTS $PRODUCT WITH (FORCE)" >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

psql -q "$ADMIN" -c "CREATE DATABASE $OWN" -c "CREATE DATABASE $PRODUCT"
mkdir -p "$WORK/dir" "$WORK/no-contracts"
cat >"$WORK/dir/databases.yaml" <<'YAML'
databases:
  nexus:
    url: ${BENCH_PRODUCT_URL}
    outbox: true
YAML
# The DDL of docs/DATABASES.md (store::outbox::SOURCE_DDL).
psql -q "$BASE/$PRODUCT" <<'SQL'
CREATE SCHEMA IF NOT EXISTS busbar_outbox;
CREATE TABLE IF NOT EXISTS busbar_outbox.events (
    seq BIGSERIAL PRIMARY KEY,
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL,
    source_product VARCHAR(50) NOT NULL,
    event_name VARCHAR(100) NOT NULL,
    event_data JSONB NOT NULL DEFAULT '{}',
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    idempotency_key VARCHAR(200));
CREATE TABLE IF NOT EXISTS busbar_outbox.rejected (
    n BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL, id UUID, organization_id UUID,
    source_product TEXT, event_name TEXT, event_data JSONB, occurred_at TIMESTAMPTZ,
    idempotency_key TEXT, reason TEXT NOT NULL, rejected_at TIMESTAMPTZ NOT NULL DEFAULT now());
SQL
cat >"$WORK/insert.sql" <<'SQL'
\set n random(1, 1000000)
INSERT INTO busbar_outbox.events (organization_id, source_product, event_name, event_data)
VALUES ('6f1c2a3e-0000-4000-8000-000000000001', 'nexus', 'employee.hired', jsonb_build_object('n', :n));
SQL

rate() { # pgbench's tps line
  pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_RUN" -f "$WORK/insert.sql" "$BASE/$PRODUCT" 2>/dev/null |
    sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
count() { psql -qtA "$1" -c "$2"; }

alone=$(rate)
psql -q "$BASE/$PRODUCT" -c "TRUNCATE busbar_outbox.events"
echo "pgbench alone: $alone inserts/s ($CLIENTS clients, ${SECONDS_RUN} s)"

BENCH_PRODUCT_URL="$BASE/$PRODUCT" BUSBAR_LOG=warn "$BUSBAR" serve --listen 127.0.0.1:0 \
  --database-url "$BASE/$OWN" --dir "$WORK/dir" --contracts "$WORK/no-contracts" >/dev/null &
SERVE_PID=$!
for _ in $(seq 100); do
  [ "$(count "$BASE/$OWN" "SELECT to_regclass('integrations.events') IS NOT NULL" 2>/dev/null)" = t ] && break
  sleep 0.1
done
sleep 1
before=$(count "$BASE/$OWN" "SELECT COUNT(*) FROM integrations.events")
start=$(date +%s.%N)
beside=$(rate)
moved=$(( $(count "$BASE/$OWN" "SELECT COUNT(*) FROM integrations.events") - before ))
elapsed=$(echo "$(date +%s.%N) - $start" | bc -l)
left=$(count "$BASE/$PRODUCT" "SELECT COUNT(*) FROM busbar_outbox.events")
moved_rate=$(echo "$moved / $elapsed" | bc -l)
printf 'pgbench beside busbar: %s inserts/s; moved %d rows in %.1f s: %.0f/s (%d left in the outbox)\n' \
  "$beside" "$moved" "$elapsed" "$moved_rate" "$left"
printf 'moved / pgbench alone: %.2f (target >= 0.5)\n' "$(echo "$moved_rate / $alone" | bc -l)"
