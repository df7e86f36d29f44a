"""The dashboard's runs table with 100k runs: server time for its first page, ctflow against
MLflow's own server, in one session.

Both servers get the same data: one experiment of RUNS runs, each with 5 params, 5 metrics
(one point each, so latest_metrics too) and 3 tags. Creating 100k runs through MLflow's
REST API takes the better part of an hour on this machine, so the rows are written with SQL
straight into each server's own schema (MLflow's created by its SqlAlchemyStore, ctflow's by
its migrations), then each server is started on its file and queried over HTTP:

  first_page     POST runs/search {experiment_ids, max_results: 100, order_by: start_time DESC}
                 (what the runs table asks for when it opens)
  sorted_filter  the same with filter "metrics.m0 > 0.5" and order_by "metrics.m1 DESC"
                 (a filtered table sorted by a metric column)

Usage: python bench/runs_page_bench.py   (env: RUNS=100000, REPS=20, MLFLOW_REPS=5, CTFLOW_BENCH_BIN)
Prints one JSON line per server and query.
"""
import http.client
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = os.environ.get("CTFLOW_BENCH_BIN", str(REPO / "target" / "dist" / "ctflow"))
MLFLOW = str(Path(sys.executable).parent / "mlflow")
RUNS = int(os.environ.get("RUNS", "100000"))
REPS = int(os.environ.get("REPS", "20"))
# MLflow takes seconds per page at this size: fewer repetitions keep the run short.
MLFLOW_REPS = int(os.environ.get("MLFLOW_REPS", "5"))
T0 = 1_790_000_000_000

QUERIES = {
    "first_page": {"max_results": 100, "order_by": ["attributes.start_time DESC"]},
    "sorted_filter": {"max_results": 100, "filter": "metrics.m0 > 0.5", "order_by": ["metrics.m1 DESC"]},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows():
    rng = random.Random(7)
    for i in range(RUNS):
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        params = {f"p{k}": str(rng.randint(0, 9)) for k in range(5)}
        metrics = {f"m{k}": rng.random() for k in range(5)}
        yield run_id, T0 + i * 1000, params, metrics


def bits(v):
    return struct.unpack("<q", struct.pack("<d", v))[0]


def fill_ctflow(db, experiment_id):
    con = sqlite3.connect(db)
    with con:
        for run_id, start, params, metrics in rows():
            con.execute("INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, "
                        "artifact_uri, lifecycle_stage) VALUES (?, ?, ?, 'bench', 'FINISHED', ?, ?, ?, 'active')",
                        (run_id, f"run-{run_id[:6]}", experiment_id, start, start + 500,
                         f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"))
            con.executemany("INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?)",
                            [(run_id, k, v) for k, v in params.items()])
            con.executemany("INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?)",
                            [(run_id, "mlflow.user", "bench"), (run_id, "mlflow.source.name", "train.py"),
                             (run_id, "mlflow.runName", f"run-{run_id[:6]}")])
            con.executemany("INSERT INTO metrics (run_uuid, key, timestamp, step, value, is_nan, value_bits) "
                            "VALUES (?, ?, ?, 0, ?, 0, ?)", [(run_id, k, start, v, bits(v)) for k, v in metrics.items()])
            con.executemany("INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits) "
                            "VALUES (?, ?, ?, 0, ?, 0, ?)", [(run_id, k, v, start, bits(v)) for k, v in metrics.items()])
    con.close()


def fill_mlflow(db, experiment_id):
    con = sqlite3.connect(db)
    with con:
        for run_id, start, params, metrics in rows():
            con.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                        "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                        "VALUES (?, ?, 'LOCAL', '', '', 'bench', 'FINISHED', ?, ?, '', 'active', ?, ?)",
                        (run_id, f"run-{run_id[:6]}", start, start + 500,
                         f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts", experiment_id))
            con.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?, ?, ?)',
                            [(k, v, run_id) for k, v in params.items()])
            con.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?)',
                            [("mlflow.user", "bench", run_id), ("mlflow.source.name", "train.py", run_id),
                             ("mlflow.runName", f"run-{run_id[:6]}", run_id)])
            con.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, 0, 0)',
                            [(k, v, start, run_id) for k, v in metrics.items()])
            con.executemany('INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid) '
                            "VALUES (?, ?, ?, 0, 0, ?)", [(k, v, start, run_id) for k, v in metrics.items()])
    con.close()


class Server:
    def __init__(self, cmd, port, cwd):
        self.port = port
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.call("GET", "/health")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{cmd[0]} did not start")

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {data[:300]!r}")
            return json.loads(data) if data.strip().startswith(b"{") else data
        finally:
            conn.close()

    def stop(self):
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # A worker still busy with a query that timed out does not stop on SIGTERM.
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


TIMEOUT_S = 120


def measure(label, server, experiment_id, reps):
    for name, query in QUERIES.items():
        body = {"experiment_ids": [str(experiment_id)], **query}
        try:
            page = server.call("POST", "/api/2.0/mlflow/runs/search", body)
        except TimeoutError:
            print(json.dumps({"server": label, "query": name, "runs": RUNS, "timed_out_after_s": TIMEOUT_S}), flush=True)
            continue
        runs = page["runs"]
        assert len(runs) == 100, (label, name, len(runs))
        assert len(runs[0]["data"]["metrics"]) == 5 and len(runs[0]["data"]["params"]) == 5
        if name == "sorted_filter":
            m1 = [next(m["value"] for m in r["data"]["metrics"] if m["key"] == "m1") for r in runs]
            assert m1 == sorted(m1, reverse=True), label
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
        payload = json.dumps(body)
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            conn.request("POST", "/api/2.0/mlflow/runs/search", body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - started) * 1000)
        conn.close()
        times.sort()
        print(json.dumps({"server": label, "query": name, "runs": RUNS, "reps": reps,
                          "p50_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
                          "min_ms": round(times[0], 2)}), flush=True)


def main():
    work = Path(tempfile.mkdtemp(prefix="runs-page-bench-"))
    try:
        # ctflow: the server creates its schema and the experiment, then the rows go in.
        db = work / "ctflow.db"
        port = free_port()
        cmd = [BIN, "server", "--port", str(port), "--backend-store-uri", f"sqlite:///{db}",
               "--artifacts-destination", str(work / "ctflow-artifacts")]
        server = Server(cmd, port, work)
        experiment_id = server.call("POST", "/api/2.0/mlflow/experiments/create", {"name": "bench-100k"})["experiment_id"]
        server.stop()
        started = time.monotonic()
        fill_ctflow(db, int(experiment_id))
        print(json.dumps({"filled": "ctflow", "seconds": round(time.monotonic() - started, 1)}), flush=True)
        server = Server(cmd, port, work)
        measure("ctflow", server, experiment_id, REPS)
        server.stop()

        # MLflow: its store creates the schema; same experiment, same rows.
        mdb = work / "mlflow.db"
        subprocess.run([sys.executable, "-c", "import sys; from mlflow.store.tracking.sqlalchemy_store import "
                        "SqlAlchemyStore as S; s = S(sys.argv[1], sys.argv[2]); print(s.create_experiment('bench-100k'))",
                        f"sqlite:///{mdb}", str(work / "mlflow-artifacts")], check=True, capture_output=True)
        con = sqlite3.connect(mdb)
        mlflow_experiment = con.execute("SELECT experiment_id FROM experiments WHERE name = 'bench-100k'").fetchone()[0]
        con.close()
        started = time.monotonic()
        fill_mlflow(mdb, mlflow_experiment)
        print(json.dumps({"filled": "mlflow", "seconds": round(time.monotonic() - started, 1)}), flush=True)
        mport = free_port()
        server = Server([MLFLOW, "server", "--backend-store-uri", f"sqlite:///{mdb}", "--artifacts-destination",
                         str(work / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(mport)], mport, work)
        measure("mlflow", server, mlflow_experiment, MLFLOW_REPS)
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
