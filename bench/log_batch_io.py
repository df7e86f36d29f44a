#!/usr/bin/env python3
"""What a log-batch costs the machine beyond the server's CPU: bytes written to storage per
point, beside the server's CPU per point.

Runs the REST benchmark's own log-batch workload (`make_batch_bodies`, `_w_log_batch`,
`run_parallel` from `../shared/bench/mlflow_bench.py`: fresh runs, 1000-point batches of 10
keys x 100 steps, one client process per run) against a running server, and reads the
server's `/proc/PID/io` (`write_bytes`: what the process sent toward storage, the WAL and
the checkpoints into the database file alike) and its CPU before and after each round.
Prints one JSON line per round.

    python3 bench/log_batch_io.py --url http://127.0.0.1:5000 --pid PID --clients 8 \\
        --batches 50 --rounds 3
"""
import argparse
import json
import os
import time

from bench_support import MLFLOW_BENCH, load_mlflow_bench, storage_written_bytes


def cpu_s(pid):
    """The process's CPU seconds (user + system, all threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Ctx:
    client_mode = "process"

    def __init__(self, url):
        self.url = url
        self.headers = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", required=True, type=int)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batches", type=int, default=50, help="per client per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench", default=MLFLOW_BENCH)
    args = ap.parse_args()
    bench = load_mlflow_bench(args.bench)
    ctx = Ctx(args.url)
    client = bench.Mlflow(args.url)
    experiment = client.create_experiment(f"log-batch-io-{time.time_ns()}")
    if isinstance(experiment, dict):
        experiment = experiment["experiment_id"]
    for round_ in range(args.rounds):
        runs = [client.create_run(experiment)["run_id"] for _ in range(args.clients)]
        bodies = [bench.make_batch_bodies(run, args.batches) for run in runs]
        written, cpu = storage_written_bytes(args.pid), cpu_s(args.pid)
        result = bench.run_parallel(ctx, bench._w_log_batch, bodies)
        written = storage_written_bytes(args.pid) - written
        cpu = cpu_s(args.pid) - cpu
        points = result["units"]
        print(json.dumps({
            "round": round_, "clients": args.clients, "points": points,
            "points_per_s": round(points / result["wall_s"]),
            "storage_bytes_per_point": round(written / points, 1),
            "server_cpu_us_per_point": round(cpu / points * 1e6, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
