"""Scoring throughput and latency: `ctflow models serve` next to `mlflow models serve` for
the same iris model (a scikit-learn LogisticRegression with a column signature), in the
same session, at 1, 8 and 32 concurrent clients.

Each client keeps one HTTP connection (or, with --fresh, opens one per request) and sends
single-row `dataframe_split` requests back to back for the measured period (after a
warm-up). Clients run in 4 processes so the
load generator is not held back by one Python interpreter. Both servers run with their
defaults except the worker count, which is the same for both (`--workers`).

    python bench/serving_bench.py --ctflow target/release/ctflow --seconds 10

Writes one JSON line per (server, clients) to bench/results/<date>/serving.jsonl."""
import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_model(folder):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    mlflow.sklearn.save_model(model, folder, signature=infer_signature(X, model.predict(X)))
    return X


def wait_ready(url, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def client_process(port, body, threads, warmup, seconds, fresh, out):
    latencies, errors = [], 0
    lock = threading.Lock()
    start_at = time.monotonic() + warmup
    stop_at = start_at + seconds

    def run():
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad = [], 0
        while True:
            now = time.perf_counter()
            mono = time.monotonic()
            if mono >= stop_at:
                break
            try:
                if fresh:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                if fresh:
                    conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            took = time.perf_counter() - now
            if mono >= start_at:
                if ok:
                    mine.append(took)
                else:
                    bad += 1
        with lock:
            latencies.extend(mine)
            errors += bad

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, errors))


def measure(port, body, clients, warmup, seconds, fresh):
    processes = min(clients, 4)
    per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=client_process, args=(port, body, n, warmup, seconds, fresh, out))
             for n in per]
    for p in procs:
        p.start()
    latencies, errors = [], 0
    for _ in procs:
        lat, err = out.get()
        latencies.extend(lat)
        errors += err
    for p in procs:
        p.join()
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else None,
    }


def start(kind, ctflow, model_dir, workers, logdir):
    port = free_port()
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if kind == "mlflow":
        cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve", "-m", model_dir,
               "--env-manager", "local", "-p", str(port), "-w", str(workers)]
    else:
        cmd = [ctflow, "models", "serve", "-m", model_dir, "-p", str(port), "--workers", str(workers)]
    log = open(os.path.join(logdir, f"{kind}.log"), "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}", proc)
    return port, proc


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctflow", default=str(REPO / "target" / "release" / "ctflow"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--fresh", action="store_true",
                        help="a new connection per request (default: one kept-alive connection per client)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / time.strftime("%Y-%m-%d") / "serving.jsonl"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="serving-bench-")
    model_dir = os.path.join(work, "model")
    X = save_model(model_dir)
    body = json.dumps({"dataframe_split": X.iloc[[7]].to_dict(orient="split")}).encode()
    rows = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for kind in ("mlflow", "ctflow"):
        port, proc = start(kind, args.ctflow, model_dir, args.workers, work)
        try:
            for clients in [int(c) for c in args.clients.split(",")]:
                row = {"server": kind, "workers": args.workers, "seconds": args.seconds,
                       "connections": "fresh" if args.fresh else "keep-alive",
                       **measure(port, body, clients, args.warmup, args.seconds, args.fresh)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
        finally:
            stop(proc)
    print("\n| clients | mlflow req/s | ctflow req/s | ratio | mlflow p50 / p99 ms | ctflow p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for clients in [int(c) for c in args.clients.split(",")]:
        m = next(r for r in rows if r["server"] == "mlflow" and r["clients"] == clients)
        c = next(r for r in rows if r["server"] == "ctflow" and r["clients"] == clients)
        print(f"| {clients} | {m['rps']:.0f} | {c['rps']:.0f} | {c['rps'] / m['rps']:.2f}x | "
              f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f} | {c['p50_ms']:.1f} / {c['p99_ms']:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
