#!/usr/bin/env bash
# The log-batch side-by-side of this folder: "after" is target/release/ctflow (a0dadc7),
# "before" /tmp/ctflow-old (a release build of 79df950), MLflow's server between them.
# SCALE and OUT as used for each set (see summary.md).
set -euo pipefail
repo=/work/main; py=$repo/.venv/bin/python; bench=$repo/../shared/bench/mlflow_bench.py
out=${OUT:-$repo/bench/results/2026-12-04/direct-write}
common=(--scale ${SCALE:-1} --reps 3 --scenarios log_batch --startup-reps 1 --mem-sample-interval 1 --client-mode process)
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
one() { # label bin
  local label=$1 bin=$2 work port; work=$(mktemp -d /tmp/lb-$label.XXXX); port=$(free_port)
  "$py" "$bench" --url "http://127.0.0.1:$port" --label "$label" --out "$out/$label.jsonl" \
    --server-cmd "$bin server --port $port --backend-store-uri sqlite:///$work/ctflow.db --artifacts-destination $work/artifacts" \
    --server-cwd "$work" --server-log "$work/server.log" --db-path "$work/ctflow.db" "${common[@]}"
  rm -rf "$work"
}
one after-1 $repo/target/release/ctflow
one before-1 /tmp/ctflow-old
mwork=$(mktemp -d /tmp/mlflow-lb.XXXX); port=$(free_port)
"$py" "$bench" --url "http://127.0.0.1:$port" --label mlflow --out "$out/mlflow.jsonl" \
  --server-cmd "$repo/.venv/bin/mlflow server --backend-store-uri sqlite:///$mwork/mlflow.db --artifacts-destination $mwork/art --host 127.0.0.1 --port $port" \
  --server-cwd "$mwork" --server-log "$mwork/server.log" --db-path "$mwork/mlflow.db" "${common[@]}"
rm -rf "$mwork"
one after-2 $repo/target/release/ctflow
one before-2 /tmp/ctflow-old
one after-3 $repo/target/release/ctflow
one before-3 /tmp/ctflow-old
mwork=$(mktemp -d /tmp/mlflow-lb.XXXX); port=$(free_port)
"$py" "$bench" --url "http://127.0.0.1:$port" --label mlflow-2 --out "$out/mlflow-2.jsonl" \
  --server-cmd "$repo/.venv/bin/mlflow server --backend-store-uri sqlite:///$mwork/mlflow.db --artifacts-destination $mwork/art --host 127.0.0.1 --port $port" \
  --server-cwd "$mwork" --server-log "$mwork/server.log" --db-path "$mwork/mlflow.db" "${common[@]}"
rm -rf "$mwork"
one after-4 $repo/target/release/ctflow
one before-4 /tmp/ctflow-old
