#!/usr/bin/env bash
# busbar delivering the limit's work into another database (issue 17):
# busbar's own database is PostgreSQL (bench_busbar: log, lanes, core), the
# employees and the map are in nexus's database — a second PostgreSQL
# database (bench_nexus) or MariaDB (database hris). Events are published
# over HTTP by wrk with ../../../shared/bench's scripts, as busbar.sh does.
# Usage: benches/elsewhere/run.sh postgres|mariadb [seconds=15] [connections=16] [batch=1]
# Prints stored events, applied employees and applied/s (publish start ->
# last row applied). Run from the project's root after `cargo build --release`.
# With DRAIN=N, no publishing over HTTP: N events are written into the log
# by SQL first (as a product's outbox insert would), then busbar is started
# and timed until it has applied them all (delivery alone).
set -euo pipefail
B=${BUSBAR:-$PWD/target/release/busbar}
HERE=$(cd "$(dirname "$0")" && pwd)
REF=${REF:-$HERE/../../../shared/bench}
KIND=${1:?postgres or mariadb}; T=${2:-15}; C=${3:-16}; N=${4:-1}
PGHOST=${PGHOST:-127.0.0.1}; PGUSER=${PGUSER:-postgres}; export PGHOST PGUSER
MARIADB=${MARIADB_ARGS:--h 127.0.0.1 -P 3306 -u root}
DB=bench_busbar; URL="postgres://$PGUSER@$PGHOST/$DB"; PORT=8083
dropdb --if-exists $DB; createdb $DB
"$B" migrate --database-url "$URL" --example-platform >/dev/null
psql -q -d $DB <<'SQL'
INSERT INTO core.organizations (id, name) VALUES ('11111111-1111-1111-1111-111111111111', 'Acme');
INSERT INTO core.product_subscriptions (organization_id, product_id, status) VALUES ('11111111-1111-1111-1111-111111111111', 'nexus', 'active');
SQL
case "$KIND" in
  postgres)
    dropdb --if-exists bench_nexus; createdb bench_nexus; psql -q -d bench_nexus -f "$HERE/postgres.sql"
    export BENCH_NEXUS_URL="postgres://$PGUSER@$PGHOST/bench_nexus"
    count() { psql -tA -d bench_nexus -c "select count(*) from hris.candidate_employee_map"; } ;;
  mariadb)
    mariadb $MARIADB -e "DROP DATABASE IF EXISTS hris"; mariadb $MARIADB < "$HERE/mariadb.sql"
    export BENCH_NEXUS_URL="mysql://root@127.0.0.1:3306/hris"
    count() { mariadb $MARIADB -N -B -e "select count(*) from hris.candidate_employee_map"; } ;;
  *) echo "postgres or mariadb" >&2; exit 2 ;;
esac
if [ -n "${DRAIN:-}" ]; then
  psql -q -d $DB -c "INSERT INTO integrations.events (organization_id, source_product, event_name, event_data)
    SELECT '11111111-1111-1111-1111-111111111111', 'recruitiq', 'candidate.hired',
           jsonb_build_object('candidate', jsonb_build_object('id', c, 'firstName', 'Ada', 'lastName', 'Lovelace',
             'email', 'ada.' || c || '@acme.test', 'phone', '+15550100'), 'hiredBy', '22222222-2222-2222-2222-222222222222')
      FROM (SELECT gen_random_uuid()::text AS c FROM generate_series(1, $DRAIN)) g"
fi
BUS_TOKEN=$("$B" keys create --platform --scope publish --database-url "$URL" 2>/dev/null | grep -o 'bb_[A-Za-z0-9_]*'); export BUS_TOKEN
"$B" serve --database-url "$URL" --dir "$HERE/integrations.d" --contracts "$REF/same-work/schemas/events" \
  --watch off --listen 127.0.0.1:$PORT ${WORKERS:+--workers $WORKERS} >/tmp/busbar-bench-elsewhere.log 2>&1 & pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
start=$(date +%s.%N)
cd "$REF"
if [ -n "${DRAIN:-}" ]; then
  n=$(count); prev=$n; still=0
  while [ "$n" -lt "$DRAIN" ] && [ "$still" -lt 100 ]; do   # gives up after 10 s without progress
    sleep 0.1; n=$(count)
    if [ "$n" = "$prev" ]; then still=$((still + 1)); else still=0; prev=$n; fi
  done
  end=$(date +%s.%N)
  kill $pid; wait $pid 2>/dev/null || true
  dead=$(psql -tA -d $DB -c "select count(*) from integrations.deliveries where status = 'dead'")
  echo "busbar into $KIND, draining $DRAIN events written beforehand: applied $n in $(echo "$end - $start" | bc) s => $(echo "$n / ($end - $start)" | bc) applied/s; dead $dead"
  exit 0
fi
if [ "$N" = 1 ]; then wrk -t2 -c "$C" -d "${T}s" -s hire.lua http://127.0.0.1:$PORT/ >/tmp/wrk-elsewhere.txt
else BATCH=$N wrk -t2 -c "$C" -d "${T}s" -s hire-batch.lua http://127.0.0.1:$PORT/ >/tmp/wrk-elsewhere.txt; fi
prev=-1; n=$(count)
while [ "$n" != "$prev" ]; do prev=$n; sleep 1; n=$(count); done
end=$(date +%s.%N)
kill $pid; wait $pid 2>/dev/null || true
events=$(psql -tA -d $DB -c "select count(*) from integrations.events")
dead=$(psql -tA -d $DB -c "select count(*) from integrations.deliveries where status = 'dead'")
non2xx=$(awk '/Non-2xx/ {print $NF}' /tmp/wrk-elsewhere.txt); lat=$(awk '/Latency/ {print $2; exit}' /tmp/wrk-elsewhere.txt)
echo "busbar into $KIND (batch $N, $C conns): stored $events events, applied $n in $(echo "$end - $start - 1" | bc) s => $(echo "$n / ($end - $start - 1)" | bc) applied/s; mean publish latency $lat; non-2xx ${non2xx:-0}; dead $dead"
