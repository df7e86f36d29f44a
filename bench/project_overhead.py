#!/usr/bin/env python3
"""Wall-clock overhead of project runners over running the training script directly:
`ctflow run` and `mlflow run` (both --env-manager local) against `python train.py`, on the
same project (examples/iris), the same ctflow tracking server, the same machine.

    .venv/bin/python bench/project_overhead.py --ctflow target/dist/ctflow --reps 5
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IRIS = REPO / "examples" / "iris"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctflow", default=str(REPO / "target" / "dist" / "ctflow"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    venv_bin = os.path.dirname(sys.executable)
    work = tempfile.mkdtemp(prefix="ctflow-overhead")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([args.ctflow, "server", "--port", str(port)], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        env = dict(os.environ, MLFLOW_TRACKING_URI=url, PATH=f"{venv_bin}:{os.environ['PATH']}",
                   MLFLOW_EXPERIMENT_NAME="overhead")
        commands = {
            "python train.py": ["python", "train.py", "-C", "0.05"],
            "ctflow run": [args.ctflow, "run", str(IRIS), "-P", "C=0.05", "--env-manager", "local"],
            "mlflow run": [os.path.join(venv_bin, "mlflow"), "run", str(IRIS), "-P", "C=0.05", "--env-manager", "local"],
        }
        times = {name: [] for name in commands}
        for rep in range(args.reps + 1):
            for name, command in commands.items():
                started = time.perf_counter()
                subprocess.run(command, cwd=IRIS, env=env, check=True, capture_output=True)
                if rep > 0:  # the first round warms file caches and is not counted
                    times[name].append(time.perf_counter() - started)
        direct = statistics.median(times["python train.py"])
        record = {"scenario": "project_overhead", "reps": args.reps,
                  "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
                  "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()}}
        record["overhead_s"] = {k: round(statistics.median(v) - direct, 3) for k, v in times.items() if k != "python train.py"}
        print(json.dumps(record, indent=1))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
    finally:
        os.killpg(server.pid, 15)
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
