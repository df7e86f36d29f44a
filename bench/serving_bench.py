"""Scoring throughput and latency: `ctflow models serve` next to `mlflow models serve` for
the same iris model (a scikit-learn LogisticRegression with a column signature), in the
same session, at 1, 8 and 32 concurrent clients.

Each client keeps one HTTP connection (or, with --fresh, opens one per request) and sends
single-row `dataframe_split` requests back to back for the measured period (after a
warm-up). The clients are the Rust load generator crates/ctflow-serving/examples/
scoring_load.rs (one thread of async clients), so they take little of the two cores the
servers share with them. Both servers run with their defaults except the worker count,
which is the same for both (`--workers`).

    cargo build --release -p ctflow-cli && cargo build --release -p ctflow-serving --examples
    python bench/serving_bench.py --ctflow target/release/ctflow --seconds 10

The cost of the inference log (issue 21): ctflow without and with `--log`, alternating,
in the same session; each log row also records what the log wrote and dropped:

    python bench/serving_bench.py --servers ctflow,ctflow-log --rounds 2

Writes one JSON line per (server, clients) to bench/results/<date>/serving.jsonl."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def measure(loadgen, port, body_file, clients, warmup, seconds, fresh):
    cmd = [loadgen, "--url", f"http://127.0.0.1:{port}", "--body-file", body_file, "--clients", str(clients),
           "--seconds", str(seconds), "--warmup", str(warmup)]
    if fresh:
        cmd.append("--fresh")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def start(kind, ctflow, model_dir, workers, logdir):
    port = free_port()
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if kind == "mlflow":
        cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve", "-m", model_dir,
               "--env-manager", "local", "-p", str(port), "-w", str(workers)]
    else:
        cmd = [ctflow, "models", "serve", "-m", model_dir, "-p", str(port), "--workers", str(workers)]
        if kind == "ctflow-log":
            cmd += ["--log", os.path.join(logdir, f"inference-log-{port}")]
    log = open(os.path.join(logdir, f"{kind}.log"), "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}", proc)
    return port, proc


def log_rows(port):
    """What the inference log wrote and dropped so far (0s without a log)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = {"written": 0, "dropped": 0}
    for line in text.splitlines():
        for result in counts:
            if line.startswith(f'ctflow_serving_log_rows_total{{result="{result}"}}'):
                counts[result] = int(float(line.split()[-1]))
    return counts


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctflow", default=str(REPO / "target" / "release" / "ctflow"))
    parser.add_argument("--loadgen", default=str(REPO / "target" / "release" / "examples" / "scoring_load"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--fresh", action="store_true",
                        help="a new connection per request (default: one kept-alive connection per client)")
    parser.add_argument("--servers", default="mlflow,ctflow",
                        help="mlflow, ctflow and ctflow-log (ctflow with --log), in this order")
    parser.add_argument("--rounds", type=int, default=1, help="how many times the servers take turns")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / time.strftime("%Y-%m-%d") / "serving.jsonl"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="serving-bench-")
    model_dir = os.path.join(work, "model")
    X = save_model(model_dir)
    body_file = os.path.join(work, "body.json")
    with open(body_file, "w") as f:
        json.dump({"dataframe_split": X.iloc[[7]].to_dict(orient="split")}, f)
    rows = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    servers = args.servers.split(",")
    for kind in servers * args.rounds:
        port, proc = start(kind, args.ctflow, model_dir, args.workers, work)
        try:
            for clients in [int(c) for c in args.clients.split(",")]:
                row = {"server": kind, "workers": args.workers, "seconds": args.seconds,
                       "connections": "fresh" if args.fresh else "keep-alive",
                       "loadgen": "scoring_load",
                       **measure(args.loadgen, port, body_file, clients, args.warmup, args.seconds, args.fresh)}
                if kind.startswith("ctflow"):
                    row["log_rows"] = log_rows(port)
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
        finally:
            stop(proc)
    base, other = servers[0], servers[-1]
    print(f"\n| clients | {base} req/s | {other} req/s | ratio | {base} p50 / p99 ms | {other} p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for clients in [int(c) for c in args.clients.split(",")]:
            m = [r for r in rows if r["server"] == base and r["clients"] == clients][round_]
            c = [r for r in rows if r["server"] == other and r["clients"] == clients][round_]
            print(f"| {clients} | {m['rps']:.0f} | {c['rps']:.0f} | {c['rps'] / m['rps']:.2f}x | "
                  f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f} | {c['p50_ms']:.1f} / {c['p99_ms']:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
