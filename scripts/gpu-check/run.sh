#!/usr/bin/env bash
# The GPU check of the local worker pool: ctflow up on a GPU machine, a resources.gpu: 1
# pipeline trains with PyTorch on the GPU the pool hands out (CUDA_VISIBLE_DEVICES), its
# metrics reach the server, and a pipeline asking for more GPUs than the machine has fails with the reason.
# Put a dist-profile `ctflow` binary (cargo build --profile dist) beside this script; results go to $OUT (default /tmp/gpu-check).
set -u
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
cd "$(dirname "$0")"
B=$PWD/ctflow
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee $OUT/nvidia-smi.txt
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
mkdir -p /tmp/ct && cp -r pipelines project /tmp/ct/
cd /tmp/ct
$B up --port 5055 --pipelines /tmp/ct/pipelines --workers 2 > $OUT/up.log 2>&1 &
for i in $(seq 1 100); do curl -sf http://127.0.0.1:5055/health >/dev/null && break; sleep 0.2; done
U=http://127.0.0.1:5055
for i in $(seq 1 50); do curl -sf $U/api/ctflow/v1/pipelines/gpu-too-many >/dev/null && break; sleep 0.2; done
$B pipelines trigger gpu-check --wait --tracking-uri $U > $OUT/trigger.txt 2>&1; echo "gpu-check exit $?" | tee -a $OUT/trigger.txt
$B pipelines trigger gpu-too-many --wait --tracking-uri $U > $OUT/trigger2.txt 2>&1; echo "gpu-too-many exit $?" | tee -a $OUT/trigger2.txt
curl -s "$U/api/ctflow/v1/pipelines/gpu-check/runs" > $OUT/runs.json
curl -s "$U/api/ctflow/v1/pipelines/gpu-too-many/runs" > $OUT/runs2.json
RID=$(python3 -c "import json;print(json.load(open('$OUT/runs.json'))['pipeline_runs'][0]['run_id'])")
curl -s "$U/api/2.0/mlflow/runs/get?run_id=$RID" > $OUT/run.json
python3 - <<PY
import json
runs = json.load(open("$OUT/runs.json"))["pipeline_runs"]
too = json.load(open("$OUT/runs2.json"))["pipeline_runs"]
run = json.load(open("$OUT/run.json"))["run"]
print("gpu-check:", runs[0]["phase"], runs[0].get("decision"))
print("params:", {p["key"]: p["value"] for p in run["data"].get("params", [])})
print("metrics:", {m["key"]: m["value"] for m in run["data"].get("metrics", [])})
print("status:", run["info"]["status"])
print("gpu-too-many:", too[0]["phase"], too[0].get("decision"), too[0].get("message"))
PY
grep -i "gpu" $OUT/up.log | head -5
kill %1; wait
