#!/usr/bin/env bash
# HTTP-stack overhead of two ctflow builds side by side: wrk (Debian's package) on cheap
# endpoints, keep-alive, 8 connections on 1 thread, alternating builds, 3 rounds of 8 s.
#
#   bench/limits_overhead.sh OLD_BINARY NEW_BINARY
set -e
for round in 1 2 3; do
  for label in old new; do
    bin=$1; [ $label = new ] && bin=$2
    work=$(mktemp -d /tmp/wrk-$label.XXXX); port=$((20000 + RANDOM % 20000))
    $bin server --port $port --backend-store-uri sqlite:///$work/c.db --artifacts-destination $work/a > $work/log 2>&1 &
    pid=$!
    for i in $(seq 100); do curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.1; done
    for path in "/health" "/api/2.0/mlflow/experiments/get?experiment_id=0"; do
      r=$(wrk -t1 -c8 -d8s "http://127.0.0.1:$port$path" | awk '/Requests\/sec/ {print $2}')
      echo "$round $label $path $r"
    done
    kill $pid; wait $pid 2>/dev/null || true; rm -rf $work
  done
done
