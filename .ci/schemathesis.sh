#!/usr/bin/env bash
# Property-based tests of the HTTP API against its own OpenAPI document:
# starts `busbar serve --dev` on a temporary SQLite database and a free
# port of 127.0.0.1, runs schemathesis (from PyPI) with the dev key printed
# at start, and stops the server. Fails when schemathesis finds a problem,
# and fails loudly when it cannot be installed.
#
#   .ci/schemathesis.sh [--max-time SECONDS]     (default 60)
#
# Every check runs except `positive_data_acceptance`: some schema-valid
# requests are rightly refused by rules a schema cannot carry (an event's
# data against its contract in schemas/events/, a cursor that no page
# gave). Any 5xx fails the run (`not_a_server_error`).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
MAX_TIME=60
if [ "${1:-}" = "--max-time" ]; then MAX_TIME="$2"; fi

venv="target/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"; then
        echo "error: cannot install schemathesis from PyPI; the API was NOT checked" >&2
        exit 1
    fi
fi

cargo build --quiet --bin busbar
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac
busbar="$target_dir/debug/busbar"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

DATABASE_URL="sqlite://$work/busbar.db" BUSBAR_LOG="busbar=warn" \
    "$busbar" serve --dev --listen "127.0.0.1:$port" >"$work/stdout" 2>"$work/stderr" &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT

for _ in $(seq 1 120); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "busbar serve exited:" >&2; cat "$work/stderr" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "$base/readyz" >/dev/null || { echo "busbar serve did not become ready" >&2; cat "$work/stderr" >&2; exit 1; }
key="$(grep -o 'bb_[a-z0-9]*_[A-Za-z0-9]*' "$work/stdout" | head -n 1)"
[ -n "$key" ] || { echo "serve --dev printed no key" >&2; exit 1; }

echo "== schemathesis against $base/openapi.json (${MAX_TIME}s)"
status=0
(cd "$work" && "$OLDPWD/$venv/bin/schemathesis" run "$base/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-time "$MAX_TIME" \
    --suppress-health-check too_slow \
    --no-color) || status=$?

# A 5xx is logged by the server with its cause: show them.
if grep -q "ERROR" "$work/stderr"; then
    echo "== server errors logged during the run:" >&2
    grep "ERROR" "$work/stderr" | head -n 50 >&2
    status=1
fi
exit "$status"
