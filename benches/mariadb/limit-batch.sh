#!/usr/bin/env bash
# The MariaDB set-based limit (issue 17): limit-batch.sql (the work of
# ../shared/bench/limit-batch.pgbench, 100 events per transaction, one
# statement per table) run by CLIENTS `mariadb` clients for SECS seconds,
# on fresh databases (limit_core, limit_hris, limit_integrations: the
# schemas core, hris, integrations) built from schema.sql.
#
# Each client reads an endless stream of transactions, each with a new
# random @n, until the deadline; the figure is the events actually
# committed (rows of limit_integrations.events at the end) over the wall time
# from the first transaction to the last client's exit, so nothing queued
# in a pipe is counted unless it committed. Commits are durable: the
# script refuses to run unless innodb_flush_log_at_trx_commit = 1.
#
# Usage: benches/mariadb/limit-batch.sh [secs=15] [clients=4]
# MariaDB at 127.0.0.1:3306, user root, no password (MARIADB_ARGS to change).
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-15}
CLIENTS=${2:-4}
ARGS=${MARIADB_ARGS:--h 127.0.0.1 -P 3306 -u root}
sql() { mariadb $ARGS -N -B "$@"; }

flush=$(sql -e "SELECT @@innodb_flush_log_at_trx_commit")
if [ "$flush" != "1" ]; then
    echo "innodb_flush_log_at_trx_commit is $flush, not 1: commits would not be durable" >&2
    exit 1
fi

drop() { sql -e "DROP DATABASE IF EXISTS limit_integrations; DROP DATABASE IF EXISTS limit_hris; DROP DATABASE IF EXISTS limit_core"; }
drop
trap drop EXIT
sql < schema.sql

# The transaction's text without its comments, once; each client
# prefixes it with its own @n.
TX=$(grep -v '^--' limit-batch.sql | tr '\n' ' ')
client() {
    local seed=$1 deadline=$2 i=0
    while [ "$(date +%s)" -lt "$deadline" ]; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            i=$((i + 1))
            # Distinct n per client and transaction: every event a new employee.
            printf 'SET @n = %d; %s\n' $((seed * 100000000 + i)) "$TX"
        done
    done | sql limit_integrations > /dev/null
}

start=$(date +%s.%N)
deadline=$(( $(date +%s) + SECS ))
pids=()
for c in $(seq 1 "$CLIENTS"); do
    client "$c" "$deadline" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
end=$(date +%s.%N)

events=$(sql -e "SELECT COUNT(*) FROM limit_integrations.events")
employees=$(sql -e "SELECT COUNT(*) FROM limit_hris.employees")
links=$(sql -e "SELECT COUNT(*) FROM limit_integrations.candidate_employee_map")
elapsed=$(echo "$end - $start" | bc -l)
rate=$(echo "$events / $elapsed" | bc -l)
printf 'MariaDB set-based limit: %d events in %.1f s = %.0f events/s (%d clients, 100 events per transaction; %d employees, %d links)\n' \
    "$events" "$elapsed" "$rate" "$CLIENTS" "$employees" "$links"
