"""Traces at volume: spans ingested over OTLP, trace reports, and trace reads, ctflow against
MLflow's own server in one session, both on a fresh SQLite file.

What MLflow's client sends (mlflow 3.17): each finished span batch as an OTLP protobuf
export to `POST /v1/traces` (header x-mlflow-experiment-id), then the trace's record to
`POST /api/3.0/mlflow/traces`. The scenarios, each with CLIENTS keep-alive connections:

  spans_1      OTLP exports of 1 span each (a span at a time, as a simple span processor)
  spans_50     OTLP exports of a 50-span trace each (as a batch span processor)
  reports      StartTraceV3 records for those traces
  search       POST traces/search, the first 100 of CORPUS reported 10-span traces in
               their own experiment, plain and with a tag filter (p50 latency)
  get_trace    GET traces/get of one of those traces with its spans (p50 latency)

Usage: .venv/bin/python bench/spans_bench.py  (env: CLIENTS=4, SECONDS=10, CORPUS=1000, CTFLOW_BENCH_BIN,
SERVERS=ctflow,mlflow). Prints one JSON line per server and scenario, and the ratio of
ctflow's throughput to MLflow's when both ran.
"""
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

REPO = Path(__file__).resolve().parents[1]
BIN = os.environ.get("CTFLOW_BENCH_BIN", str(REPO / "target" / "dist" / "ctflow"))
MLFLOW = str(Path(sys.executable).parent / "mlflow")
CLIENTS = int(os.environ.get("CLIENTS", "4"))
SECONDS = float(os.environ.get("SECONDS", "10"))
SERVERS = os.environ.get("SERVERS", "ctflow,mlflow").split(",")
CORPUS = int(os.environ.get("CORPUS", "1000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def start(name, workdir):
    port = free_port()
    log = open(os.path.join(workdir, "server.log"), "wb")
    if name == "ctflow":
        cmd = [BIN, "server", "--port", str(port), "--backend-store-uri",
               f"sqlite:///{workdir}/ctflow.db", "--artifacts-destination", f"{workdir}/artifacts"]
    else:
        cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
               f"sqlite:///{workdir}/mlflow.db", "--artifacts-destination", f"{workdir}/artifacts"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_healthy(port, proc)
    return proc, port


def stop(proc):
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)


def call(conn, method, path, body=None, headers=None):
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
    return data


class Ids:
    """Trace and span ids, unique across threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def next(self):
        with self.lock:
            self.n += 1
            return self.n


def export(trace_n, spans, first_span):
    """An OTLP export of `spans` spans of trace `trace_n` as MLflow's client writes them."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    trace_id = trace_n.to_bytes(16, "big")
    start = 1_790_000_000_000_000_000 + trace_n * 1_000_000_000
    for i in range(first_span, first_span + spans):
        span = scope.spans.add()
        span.trace_id = trace_id
        span.span_id = (trace_n * 1000 + i + 1).to_bytes(8, "big")
        if i > 0:
            span.parent_span_id = (trace_n * 1000 + 1).to_bytes(8, "big")
        span.name = "root" if i == 0 else f"step-{i}"
        span.start_time_unix_nano = start + i * 1000
        span.end_time_unix_nano = start + i * 1000 + 500_000
        span.status.code = 1
        for key, value in [
            ("mlflow.traceRequestId", AnyValue(string_value=f"tr-{trace_id.hex()}")),
            ("mlflow.spanType", AnyValue(string_value="LLM" if i else "CHAIN")),
            ("mlflow.spanInputs", AnyValue(string_value=f"question {trace_n} part {i}")),
            ("mlflow.spanOutputs", AnyValue(string_value=f"answer {trace_n} part {i}")),
            ("tokens", AnyValue(int_value=100 + i)),
        ]:
            attribute = span.attributes.add()
            attribute.key = key
            attribute.value.CopyFrom(value)
    return request.SerializeToString(), f"tr-{trace_id.hex()}"


def report(trace_id, experiment_id, spans):
    return {"trace": {"trace_info": {
        "trace_id": trace_id,
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
        "request_time": "2026-12-03T00:00:00.000Z",
        "execution_duration": "0.050s",
        "state": "OK",
        "trace_metadata": {"mlflow.trace_schema.version": "3",
                           "mlflow.trace.sizeStats": json.dumps({"num_spans": spans})},
        "tags": {"mlflow.traceName": "root", "env": "bench"},
    }}}


def timed(port, work, seconds=SECONDS):
    """Runs `work(conn)` on CLIENTS connections for `seconds`; returns units done per second."""
    done = [0] * CLIENTS
    stop_at = time.monotonic() + seconds
    errors = []

    def worker(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < stop_at:
                done[k] += work(conn)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(done) / (time.monotonic() - started)


def latency(port, method, path, body=None, reps=50):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        call(conn, method, path, body)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench(name):
    workdir = tempfile.mkdtemp(prefix=f"spans-bench-{name}-")
    proc, port = start(name, workdir)
    results = {}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        experiment = json.loads(call(conn, "POST", "/api/2.0/mlflow/experiments/create",
                                     {"name": "spans"}))["experiment_id"]
        headers = {"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment}
        ids = Ids()
        traces_50 = []

        def one_span(c):
            body, _ = export(ids.next(), 1, 0)
            call(c, "POST", "/v1/traces", body, headers)
            return 1

        def fifty_spans(c):
            n = ids.next()
            body, trace_id = export(n, 50, 0)
            call(c, "POST", "/v1/traces", body, headers)
            traces_50.append(trace_id)
            return 50

        def reports(c):
            if not traces_50:
                return 0
            trace_id = traces_50[ids.next() % len(traces_50)]
            call(c, "POST", "/api/3.0/mlflow/traces", report(trace_id, experiment, 50))
            return 1

        results["spans_1"] = timed(port, one_span)
        results["spans_50"] = timed(port, fifty_spans)
        results["reports"] = timed(port, reports)

        # Reads over the same corpus on both servers: CORPUS traces of 10 spans, reported.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        corpus = json.loads(call(conn, "POST", "/api/2.0/mlflow/experiments/create",
                                 {"name": "corpus"}))["experiment_id"]
        corpus_headers = {"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": corpus}
        corpus_ids = []
        for _ in range(CORPUS):
            body, trace_id = export(ids.next(), 10, 0)
            call(conn, "POST", "/v1/traces", body, corpus_headers)
            call(conn, "POST", "/api/3.0/mlflow/traces", report(trace_id, corpus, 10))
            corpus_ids.append(trace_id)
        location = [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": corpus}}]
        results["search_ms"] = latency(port, "POST", "/api/3.0/mlflow/traces/search",
                                       {"locations": location, "max_results": 100})
        results["search_tag_ms"] = latency(port, "POST", "/api/3.0/mlflow/traces/search",
                                           {"locations": location, "max_results": 100,
                                            "filter": "tags.env = 'bench'"})
        results["get_trace_ms"] = latency(
            port, "GET", f"/api/3.0/mlflow/traces/get?trace_id={corpus_ids[0]}")
        results["traces"] = ids.n
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    for scenario, value in results.items():
        print(json.dumps({"server": name, "scenario": scenario, "value": round(value, 2),
                          "clients": CLIENTS, "seconds": SECONDS}), flush=True)
    return results


def main():
    measured = {name: bench(name) for name in SERVERS}
    if {"ctflow", "mlflow"} <= measured.keys():
        for scenario in measured["ctflow"]:
            if scenario == "traces":
                continue
            ours, theirs = measured["ctflow"][scenario], measured["mlflow"][scenario]
            # Throughput: higher is better; latency (ms): lower is better.
            ratio = theirs / ours if scenario.endswith("_ms") else ours / theirs
            print(json.dumps({"scenario": scenario, "ctflow_vs_mlflow": round(ratio, 2)}))


if __name__ == "__main__":
    main()
