"""Scoring throughput and latency: `ctflow models serve` next to `mlflow models serve` for
the same iris model (a scikit-learn LogisticRegression with a column signature), in the
same session, at 1, 8 and 32 concurrent clients.

Each client keeps one HTTP connection (or, with --fresh, opens one per request) and sends
single-row `dataframe_split` requests back to back for the measured period (after a
warm-up). The clients are the Rust load generator crates/ctflow-serving/examples/
scoring_load.rs (one thread of async clients), so they take little of the two cores the
servers share with them. Both servers run with their defaults except the worker count,
which is the same for both (`--workers`).

    cargo build --profile dist -p ctflow-cli && cargo build --profile dist -p ctflow-serving --examples
    python bench/serving_bench.py --ctflow target/dist/ctflow --seconds 10

The cost of the inference log (issue 21): ctflow without and with `--log`, alternating,
in the same session; each log row also records what the log wrote and dropped:

    python bench/serving_bench.py --servers ctflow,ctflow-log --rounds 2

The cost of a shadow (the CD gate's `shadow`): `ctflow-shadow` serves the same model as
the registry's champion from a `ctflow up` in which a pipeline run is `Shadowing` (a
challenger trained on the same data, and a gate that never completes during the
measurement), so every answered request is also mirrored to the challenger:

    python bench/serving_bench.py --servers ctflow,ctflow-log,ctflow-shadow --rounds 2

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


TRAIN = """
import mlflow
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=500).fit(X, y)
with mlflow.start_run():
    mlflow.log_metric("accuracy", model.score(X, y))
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)))
"""

PIPELINE = """
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: bench-shadow }}
spec:
  project: {{ uri: {project}, envManager: local }}
  model: {{ name: bench-shadow }}
  gates:
    cd:
      shadow: {{ requests: 1000000000, timeout: 1d }}
"""


def api(url, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def wait_until(what, predicate, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


class ShadowingUp:
    """`ctflow up` with a pipeline whose second run shadows the first's champion."""

    def __init__(self, ctflow, work, env):
        self.work = Path(work) / "up"
        project = self.work / "project"
        project.mkdir(parents=True)
        (project / "MLproject").write_text("name: bench\nentry_points:\n  main:\n    command: python train.py\n")
        (project / "train.py").write_text(TRAIN)
        pipelines = self.work / "pipelines"
        pipelines.mkdir()
        (pipelines / "bench-shadow.yaml").write_text(PIPELINE.format(project=project))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.work / "up.log", "wb")
        self.proc = subprocess.Popen(
            [ctflow, "up", "--port", str(self.port), "--backend-store-uri", f"sqlite:///{self.work}/ctflow.db",
             "--artifacts-destination", str(self.work / "artifacts"), "--logs-dir", str(self.work / "logs"),
             "--pipelines", str(pipelines), "--workers", "1"],
            cwd=self.work, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until("ctflow up", lambda: self._healthy())
        wait_until("the pipeline", lambda: any(p["name"] == "bench-shadow"
                                               for p in api(self.url, "/api/ctflow/v1/pipelines")["pipelines"]))
        first = self.trigger("champion")
        wait_until("the champion", lambda: self.phase(first) == "Succeeded")
        self.run = self.trigger("challenger")
        wait_until("the shadowing run", lambda: self.phase(self.run) == "Shadowing")

    def _healthy(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"ctflow up exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2):
                return True
        except OSError:
            return False

    def trigger(self, key):
        return api(self.url, "/api/ctflow/v1/pipelines/bench-shadow/trigger", {"key": key})["pipeline_run"]["id"]

    def phase(self, run):
        phase = api(self.url, f"/api/ctflow/v1/pipeline-runs/{run}")["pipeline_run"]["phase"]
        if phase not in ("Pending", "Queued", "Running", "Evaluating", "Shadowing", "Succeeded"):
            raise RuntimeError(f"pipeline run {run} is {phase}")
        return phase

    def replicas(self):
        """The scoring servers that reported on the shadow (each once its challenger loaded)."""
        shadow = api(self.url, f"/api/ctflow/v1/pipeline-runs/{self.run}")["pipeline_run"].get("shadow") or {}
        return set(shadow.get("replicas") or {})

    def stop(self):
        stop(self.proc)
        self.log.close()


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


def python_env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def start(kind, ctflow, model_dir, workers, logdir, up=None):
    port = free_port()
    env = python_env()
    reported = up.replicas() if up is not None else set()
    if kind == "ctflow-shadow":
        env["MLFLOW_TRACKING_URI"] = up.url
        cmd = [ctflow, "models", "serve", "-m", "models:/bench-shadow@champion", "-p", str(port),
               "--workers", str(workers), "--follow-interval", "1s"]
    elif kind == "mlflow":
        cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve", "-m", model_dir,
               "--env-manager", "local", "-p", str(port), "-w", str(workers)]
    else:
        cmd = [ctflow, "models", "serve", "-m", model_dir, "-p", str(port), "--workers", str(workers)]
        if kind == "ctflow-log":
            cmd += ["--log", os.path.join(logdir, f"inference-log-{port}")]
    log = open(os.path.join(logdir, f"{kind}.log"), "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}", proc)
    if up is not None:
        # The challenger loads once the server sees the shadowing run; it reports at once.
        wait_until("the challenger to load", lambda: up.replicas() - reported)
    return port, proc


def counted(port, family, results):
    """A serving counter family's totals by result so far (0s when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = {result: 0 for result in results}
    for line in text.splitlines():
        for result in counts:
            if line.startswith(f'{family}{{result="{result}"}}'):
                counts[result] = int(float(line.split()[-1]))
    return counts


def log_rows(port):
    """What the inference log wrote and dropped so far (0s without a log)."""
    return counted(port, "ctflow_serving_log_rows_total", ["written", "dropped"])


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctflow", default=str(REPO / "target" / "dist" / "ctflow"))
    parser.add_argument("--loadgen", default=str(REPO / "target" / "dist" / "examples" / "scoring_load"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--fresh", action="store_true",
                        help="a new connection per request (default: one kept-alive connection per client)")
    parser.add_argument("--servers", default="mlflow,ctflow",
                        help="mlflow, ctflow, ctflow-log (ctflow with --log) and ctflow-shadow (ctflow "
                             "mirroring to a shadowing challenger), the first one the baseline")
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
    up = ShadowingUp(args.ctflow, work, python_env()) if "ctflow-shadow" in servers else None
    for kind in servers * args.rounds:
        port, proc = start(kind, args.ctflow, model_dir, args.workers, work,
                           up if kind == "ctflow-shadow" else None)
        try:
            for clients in [int(c) for c in args.clients.split(",")]:
                row = {"server": kind, "workers": args.workers, "seconds": args.seconds,
                       "connections": "fresh" if args.fresh else "keep-alive",
                       "loadgen": "scoring_load",
                       **measure(args.loadgen, port, body_file, clients, args.warmup, args.seconds, args.fresh)}
                if kind.startswith("ctflow"):
                    row["log_rows"] = log_rows(port)
                if kind == "ctflow-shadow":
                    row["shadow_copies"] = counted(port, "ctflow_serving_shadow_copies_total",
                                                   ["compared", "failed", "dropped"])
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
        finally:
            stop(proc)
    if up is not None:
        up.stop()
    base = servers[0]
    for other in servers[1:]:
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
