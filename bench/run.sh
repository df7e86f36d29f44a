#!/usr/bin/env bash
# Benchmarks ctflow against the real MLflow server on this machine, in one session, with
# the shared REST benchmark (../shared/bench/mlflow_bench.py), plus the SQLite floor.
#
#   bench/run.sh [OUT_DIR]          (default: .bench/<date>)
#
# Environment: SCALE (default 1), SEARCH_RUNS (10000), REPS (3), MLFLOW=0 to skip the
# MLflow server runs, MLFLOW_REPS / MLFLOW_STARTUP_REPS to spend less time on the slow
# reference, SCENARIOS to pass a subset to the benchmark.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_SCRIPT:-$repo/../shared/bench/mlflow_bench.py}
out=${1:-$repo/.bench/$(date +%Y%m%d-%H%M)}
py=$repo/.venv/bin/python
scale=${SCALE:-1}
search_runs=${SEARCH_RUNS:-10000}
reps=${REPS:-3}
scenarios=${SCENARIOS:-create_run,log_metric,log_batch,get_history,search,artifacts,registry}
mkdir -p "$out"
bin=${CTFLOW_BENCH_BIN:-$repo/target/dist/ctflow}
[ -n "${CTFLOW_BENCH_BIN:-}" ] || cargo build --profile dist -p ctflow-cli --manifest-path "$repo/Cargo.toml"

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A throw-away PostgreSQL for the PostgreSQL rows.
pgdir=$(mktemp -d /tmp/ctflow-bench-pg.XXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdir"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
pgport=$(free_port)
as_pg "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres -E UTF8 >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -o "-p $pgport -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pgdir" -w start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null; rm -rf "$pgdir"' EXIT
pgpid=$(head -1 "$pgdir/data/postmaster.pid")
psql_() { "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -q "$@"; }

common=(--scale "$scale" --search-runs "$search_runs" --reps "$reps" --scenarios "$scenarios" --startup-reps 3 --mem-sample-interval 1 --client-mode process)

"$py" "$repo/bench/sqlite_floor.py" --batches 200 --out "$out/sqlite-floor.jsonl"

run_ctflow() { # backend store-uri label db-args...
  local label=$1 uri=$2; shift 2
  local work; work=$(mktemp -d /tmp/ctflow-bench-$label.XXXX)
  local port; port=$(free_port)
  "$py" "$bench" --url "http://127.0.0.1:$port" --label "$label" --out "$out/$label.jsonl" \
    --server-cmd "$bin server --port $port --backend-store-uri $uri --artifacts-destination $work/artifacts" \
    --server-cwd "$work" --server-log "$work/server.log" "$@" "${common[@]}"
  rm -rf "$work"
}

work=$(mktemp -d /tmp/ctflow-bench-db.XXXX)
run_ctflow ctflow-sqlite "sqlite:///$work/ctflow.db" --db-path "$work/ctflow.db"
psql_ -c "CREATE DATABASE ctflow_bench"
run_ctflow ctflow-postgres "postgresql://postgres@127.0.0.1:$pgport/ctflow_bench" --db-pid "$pgpid" \
  --db-size-cmd "$pgbin/psql -h 127.0.0.1 -p $pgport -U postgres -tAc \"select pg_database_size('ctflow_bench')\""

if [ "${MLFLOW:-1}" = 1 ]; then
  mwork=$(mktemp -d /tmp/mlflow-bench.XXXX)
  port=$(free_port)
  "$py" "$bench" --url "http://127.0.0.1:$port" --label mlflow-sqlite --out "$out/mlflow-sqlite.jsonl" \
    --server-cmd "$repo/.venv/bin/mlflow server --backend-store-uri sqlite:///$mwork/mlflow.db --artifacts-destination $mwork/art --host 127.0.0.1 --port $port" \
    --server-cwd "$mwork" --server-log "$mwork/server.log" --db-path "$mwork/mlflow.db" "${common[@]}" \
    --reps "${MLFLOW_REPS:-$reps}" --startup-reps "${MLFLOW_STARTUP_REPS:-3}"
  rm -rf "$mwork" "$work"
fi
"$py" "$(dirname "$bench")/summarize.py" "$out"/mlflow-sqlite.jsonl "$out"/ctflow-sqlite.jsonl "$out"/ctflow-postgres.jsonl \
  --names mlflow-sqlite,ctflow-sqlite,ctflow-postgres > "$out/summary.md" 2>/dev/null || true
echo "results in $out"
