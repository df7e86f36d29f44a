#!/usr/bin/env bash
# The floods of docs/security.md against a release build, each on a fresh SQLite store:
# wrong passwords from 50 addresses (a server with --auth), 2,000 idle connections from one
# address, and from four. One JSON line each, appended to OUT.
#
#   bench/run_floods.sh [SECONDS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
OUT="${2:-bench/results/floods.jsonl}"
BIN="${CTFLOW_BIN:-target/dist/ctflow}"
PYTHON="${CTFLOW_TEST_PYTHON:-.venv/bin/python}"

start_server() { # dir port [flags...]
  local dir=$1 port=$2
  shift 2
  "$BIN" server --port "$port" --backend-store-uri "sqlite:///$dir/ctflow.db" \
    --artifacts-destination "$dir/artifacts" "$@" >"$dir/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not start: $(cat "$dir/server.log")" >&2
  return 1
}

dir=$(mktemp -d)
port=5791
echo "admin-password-1" | "$BIN" users create-admin --username admin --password-stdin \
  --backend-store-uri "sqlite:///$dir/ctflow.db" >/dev/null
start_server "$dir" "$port" --auth
token=$(curl -sf -u admin:admin-password-1 -H 'Content-Type: application/json' -d '{"name":"flood"}' \
  "http://127.0.0.1:$port/api/ctflow/v1/tokens" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$PYTHON" bench/flood.py passwords --url "http://127.0.0.1:$port" --pid "$SERVER" --token "$token" \
  --clients 100 --addresses 50 --seconds "$SECONDS_EACH" | tee -a "$OUT" || true
kill "$SERVER"; wait "$SERVER" || true
rm -rf "$dir"

for addresses in 1 4; do
  dir=$(mktemp -d)
  start_server "$dir" "$port"
  "$PYTHON" bench/flood.py idle --url "http://127.0.0.1:$port" --pid "$SERVER" \
    --connections 2000 --addresses "$addresses" --seconds "$SECONDS_EACH" | tee -a "$OUT" || true
  kill "$SERVER"; wait "$SERVER" || true
  rm -rf "$dir"
done
