#!/usr/bin/env python3
"""Sustained ingest: CLIENTS processes log 1000-point batches into one ctflow server for
DURATION seconds, while a probe measures what a user feels as the store grows: a filtered
and ordered run search, the full history of a 100k-point series, and a chart's sampled
history (get-history-bulk-interval, 320 points). Each client starts a new run every
--batches-per-run batches (with a parameter and a metric to search on), so runs and
points both grow.

Writes, under OUT_DIR: `requests.jsonl` (per minute: points/s, batch p50/p99), `probe.jsonl`
(every probe with the store's size at that moment), `server.jsonl` (RSS, database and WAL
size every 5 s) and `summary.json`. `bench/plot_growth.py OUT_DIR` draws the curves.

    python3 bench/sustained_ingest.py --bin target/dist/ctflow --clients 16 --duration 600 OUT_DIR
"""
import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time

API = "/api/2.0/mlflow"


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method, path, payload=None):
        body = json.dumps(payload).encode() if payload is not None else None
        return self.raw(method, path, body)

    def raw(self, method, path, body):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, API + path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # An idle keep-alive connection the server closed: once more on a fresh one.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request(method, API + path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return json.loads(data) if data else {}


def now_ms():
    return int(time.time() * 1000)


def new_run(client, experiment_id, index):
    run_id = client.call("POST", "/runs/create", {"experiment_id": experiment_id, "start_time": now_ms()})["run"]["info"]["run_id"]
    client.call("POST", "/runs/log-batch", {
        "run_id": run_id,
        "params": [{"key": "p1", "value": f"v{index % 10}"}],
        "metrics": [{"key": "m1", "value": (index * 7919 % 1000) / 1000.0, "timestamp": now_ms(), "step": 0}],
    })
    return run_id


def ingest(worker, port, experiment_id, deadline, batches_per_run, counters, out_path):
    client = Client(port)
    records = []
    batch = 0
    run_id = None
    step = 0
    while time.time() < deadline:
        if batch % batches_per_run == 0:
            with counters.get_lock():
                counters[0] += 1
                index = counters[0]
            run_id = new_run(client, experiment_id, index)
            step = 0
        ts = now_ms()
        metrics = [{"key": f"k{i % 10}", "value": (step + i // 10) * 0.001, "timestamp": ts, "step": step + i // 10}
                   for i in range(1000)]
        body = json.dumps({"run_id": run_id, "metrics": metrics}).encode()
        started = time.perf_counter()
        client.raw("POST", "/runs/log-batch", body)
        ended = time.perf_counter()
        records.append((time.time(), ended - started))
        with counters.get_lock():
            counters[1] += 1000
        step += 100
        batch += 1
    with open(out_path, "w") as f:
        json.dump(records, f)


def probe(port, experiment_id, reference_run, deadline, counters, out_path):
    client = Client(port)
    search = {"experiment_ids": [experiment_id], "filter": "metrics.m1 > 0.5 and params.p1 = 'v3'",
              "order_by": ["metrics.m1 DESC"], "max_results": 100}
    with open(out_path, "w") as f:
        while time.time() < deadline:
            sample = {"t": time.time(), "runs": counters[0], "points": counters[1]}
            for name, call in (
                ("search_ms", lambda: client.call("POST", "/runs/search", search)),
                ("history_100k_ms", lambda: client.call("GET", f"/metrics/get-history?run_id={reference_run}&metric_key=loss")),
                ("bulk_interval_320_ms", lambda: client.call(
                    "GET", f"/metrics/get-history-bulk-interval?run_ids={reference_run}&metric_key=loss&max_results=320")),
            ):
                started = time.perf_counter()
                call()
                sample[name] = round((time.perf_counter() - started) * 1000, 2)
            f.write(json.dumps(sample) + "\n")
            f.flush()
            time.sleep(5)


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * p)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--bin", default="target/dist/ctflow")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=int, default=600)
    ap.add_argument("--batches-per-run", type=int, default=10)
    ap.add_argument("--work-dir", help="where the database goes (default: a temporary folder)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ctflow-sustained-", dir=args.work_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    db = os.path.join(work, "ctflow.db")
    server = subprocess.Popen(
        [os.path.abspath(args.bin), "server", "--port", str(port), "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", os.path.join(work, "artifacts")],
        cwd=work, stdout=subprocess.DEVNULL, stderr=open(os.path.join(args.out_dir, "server.log"), "w"))
    try:
        for _ in range(600):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/health")
                break
            except OSError:
                time.sleep(0.05)
        client = Client(port)
        experiment_id = client.call("POST", "/experiments/create", {"name": "sustained"})["experiment_id"]
        reference = client.call("POST", "/runs/create", {"experiment_id": experiment_id, "start_time": now_ms()})["run"]["info"]["run_id"]
        for b in range(100):
            client.call("POST", "/runs/log-batch", {"run_id": reference, "metrics": [
                {"key": "loss", "value": 1.0 / (1 + b * 1000 + i), "timestamp": now_ms(), "step": b * 1000 + i}
                for i in range(1000)]})
        counters = mp.Array("q", [0, 0])
        started = time.time()
        deadline = started + args.duration
        workers = [mp.Process(target=ingest, args=(w, port, experiment_id, deadline, args.batches_per_run, counters,
                                                   os.path.join(work, f"client-{w}.json")))
                   for w in range(args.clients)]
        workers.append(mp.Process(target=probe, args=(port, experiment_id, reference, deadline, counters,
                                                      os.path.join(args.out_dir, "probe.jsonl"))))
        for w in workers:
            w.start()
        with open(os.path.join(args.out_dir, "server.jsonl"), "w") as f:
            while any(w.is_alive() for w in workers):
                f.write(json.dumps({"t": time.time(), "rss_mb": round(rss_mb(server.pid), 1),
                                    "db_mb": round(file_size(db) / 2**20, 1),
                                    "wal_mb": round(file_size(db + "-wal") / 2**20, 1),
                                    "runs": counters[0], "points": counters[1]}) + "\n")
                f.flush()
                time.sleep(5)
        for w in workers:
            w.join()
            if w.exitcode != 0:
                raise SystemExit(f"a client failed (exit {w.exitcode})")
        records = []
        for w in range(args.clients):
            with open(os.path.join(work, f"client-{w}.json")) as f:
                records.extend(json.load(f))
        minutes = {}
        for t, latency in records:
            # A batch that finished after the deadline belongs to no full minute.
            if t - started < args.duration:
                minutes.setdefault(int((t - started) // 60), []).append(latency)
        with open(os.path.join(args.out_dir, "requests.jsonl"), "w") as f:
            for minute in sorted(minutes):
                latencies = minutes[minute]
                span = min(60.0, args.duration - minute * 60)
                f.write(json.dumps({"minute": minute, "batches": len(latencies),
                                    "points_per_s": round(len(latencies) * 1000 / span),
                                    "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
                                    "p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}) + "\n")
        summary = {"clients": args.clients, "duration_s": args.duration, "runs": counters[0],
                   "points": counters[1], "db_mb": round(file_size(db) / 2**20, 1),
                   "final_rss_mb": round(rss_mb(server.pid), 1)}
        with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
            json.dump(summary, f)
        print(json.dumps(summary))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
