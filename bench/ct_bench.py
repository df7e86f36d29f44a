"""CT engine benchmarks, each against a baseline measured in the same run:

  latency    file arrival -> the job's command starts (data trigger), against
             `ctflow run` of the same project started by hand (command invoked -> it starts).
  schedule   N pipelines on per-minute cron schedules for M minutes: every tick recorded
             exactly once, and the CPU share of the `ctflow up` process.
  overhead   a pipeline run (trigger recorded -> decision) against `ctflow run` of the same
             project (the training itself plus its MLflow bookkeeping), for a no-op command
             and for the iris project.

Usage: python bench/ct_bench.py [latency|schedule|overhead ...] (default: all)
Env: CTFLOW_BENCH_BIN (default target/dist/ctflow), LATENCY_FILES (30), LATENCY_DEBOUNCE, SCHEDULE_PIPELINES
(1000), SCHEDULE_MINUTES (3), OVERHEAD_RUNS (5). Prints a JSON summary per benchmark.
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = os.environ.get("CTFLOW_BENCH_BIN", str(REPO / "target" / "dist" / "ctflow"))
PYTHON_BIN = os.path.dirname(sys.executable)
TERMINAL = {"Succeeded", "GateFailed", "Rejected", "Failed", "Canceled", "Skipped"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url, path, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out: {what}")


class Up:
    def __init__(self, workdir, workers=2):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PATH=PYTHON_BIN + os.pathsep + os.environ["PATH"], CTFLOW_LOG="warn")
        self.log = open(self.workdir / "up.log", "wb")
        self.proc = subprocess.Popen([BIN, "up", "--port", str(self.port), "--workers", str(workers),
                                      "--pipelines", str(self.workdir / "pipelines")],
                                     cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait(lambda: self._healthy(), 60, "ctflow up")

    def _healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1):
                return True
        except OSError:
            return False

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def put(self, name, spec, base_dir):
        doc = {"apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": name}, "spec": spec}
        api(self.url, f"/api/ctflow/v1/pipelines/{name}?base_dir={base_dir}", doc, method="PUT")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def project(root, name, command, params=""):
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLproject").write_text(f"name: {name}\nentry_points:\n  main:\n{params}    command: \"{command}\"\n")
    return folder


def percentiles(values):
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return {"p50": round(statistics.median(values), 1), "p90": round(pick(0.9), 1), "max": round(values[-1], 1), "n": len(values)}


def bench_latency(root):
    files = int(os.environ.get("LATENCY_FILES", "30"))
    incoming = root / "incoming"
    incoming.mkdir()
    stamps = root / "stamps"
    stamps.mkdir()
    # The command records when it started, in ns, named after the file that fired it.
    proj = project(root, "stamp", f"echo $(date +%s%N) > {stamps}/$(basename $CTFLOW_TRIGGER_FILES)")
    up = Up(root)
    try:
        data = {"path": f"{incoming}/*.csv"}
        if os.environ.get("LATENCY_DEBOUNCE"):
            data["debounce"] = os.environ["LATENCY_DEBOUNCE"]
        up.put("latency", {"project": {"uri": str(proj)}, "concurrencyPolicy": "Allow",
                           "triggers": [{"data": data}]}, root)
        time.sleep(3)  # the watcher picks the pipeline up on its next refresh
        latencies = []
        for i in range(files):
            tmp = incoming / f".f{i}.tmp"
            tmp.write_text("x\n1\n")
            t0 = time.time_ns()
            os.rename(tmp, incoming / f"f{i}.csv")
            stamp = stamps / f"f{i}.csv"
            wait(lambda: stamp.exists() and stamp.read_text().strip(), 30, f"job for f{i}")
            latencies.append((int(stamp.read_text()) - t0) / 1e6)
            time.sleep(0.2)
        # Baseline: the same command started by hand with `ctflow run`.
        manual = []
        env = dict(os.environ, MLFLOW_TRACKING_URI=up.url)
        for i in range(min(files, 10)):
            env["CTFLOW_TRIGGER_FILES"] = f"manual{i}.csv"
            t0 = time.time_ns()
            subprocess.run([BIN, "run", str(proj), "--experiment-name", "latency-manual"], env=env, check=True,
                           capture_output=True)
            manual.append((int((stamps / f"manual{i}.csv").read_text()) - t0) / 1e6)
    finally:
        up.stop()
    result = {"benchmark": "file arrival -> job start (ms)",
              "debounce": os.environ.get("LATENCY_DEBOUNCE", "100ms (default)"),
              "ctflow_up": percentiles(latencies),
              "baseline_ctflow_run_by_hand": percentiles(manual)}
    result["ratio_p50"] = round(result["ctflow_up"]["p50"] / result["baseline_ctflow_run_by_hand"]["p50"], 2)
    return result


def bench_schedule(root):
    pipelines = int(os.environ.get("SCHEDULE_PIPELINES", "1000"))
    minutes = int(os.environ.get("SCHEDULE_MINUTES", "3"))
    proj = project(root, "noop", "true")
    up = Up(root, workers=8)
    try:
        for i in range(pipelines):
            up.put(f"cron-{i:04d}", {"project": {"uri": str(proj)}, "concurrencyPolicy": "Allow",
                                     "triggers": [{"schedule": {"cron": "* * * * *"}}]}, root)
        # Measure from the next minute boundary, so every pipeline's cursor exists.
        now = time.time()
        start_minute = int(now // 60 + 1) * 60
        time.sleep(max(0, start_minute - time.time()) + 0.5)
        cpu0, wall0 = up.cpu_seconds(), time.monotonic()
        end_minute = start_minute + minutes * 60
        time.sleep(max(0, end_minute - time.time()) - 0.5)
        cpu1, wall1 = up.cpu_seconds(), time.monotonic()
        # Let the last minute's jobs finish.
        time.sleep(20)
        runs = api(up.url, "/api/ctflow/v1/pipeline-runs?max_results=1000")["pipeline_runs"]
        expected = {start_minute * 1000 + k * 60000 for k in range(minutes)}
        per_pipeline = {}
        total = 0
        for i in range(pipelines):
            name = f"cron-{i:04d}"
            body = api(up.url, f"/api/ctflow/v1/pipelines/{name}/runs?max_results=1000")["pipeline_runs"]
            ticks = [r["trigger"]["logical_time"] for r in body if start_minute * 1000 <= r["trigger"]["logical_time"] < end_minute * 1000]
            total += len(ticks)
            per_pipeline[name] = ticks
        missed = sum(len(expected - set(t)) for t in per_pipeline.values())
        doubled = sum(len(t) - len(set(t)) for t in per_pipeline.values())
        failed = [r for r in runs if r["phase"] not in ("Succeeded",) and r["phase"] in TERMINAL]
    finally:
        up.stop()
    return {"benchmark": f"{pipelines} pipelines on per-minute schedules for {minutes} min",
            "ticks_expected": pipelines * minutes, "ticks_recorded": total, "missed": missed, "doubled": doubled,
            "failed_runs_in_last_1000": len(failed),
            "cpu_share_of_one_core": round((cpu1 - cpu0) / (wall1 - wall0), 3),
            "note": "CPU is the whole ctflow up process: controller, server and the worker pool running every job "
                    "(the jobs' own processes excluded)"}


def pipeline_duration(up, run_id):
    described = wait(lambda: (lambda d: d if d["pipeline_run"]["phase"] in TERMINAL else None)(
        api(up.url, f"/api/ctflow/v1/pipeline-runs/{run_id}")), 300, "pipeline run")
    run = described["pipeline_run"]
    assert run["phase"] == "Succeeded", described
    return run["end_time"] - run["creation_time"]


def bench_overhead(root):
    n = int(os.environ.get("OVERHEAD_RUNS", "5"))
    noop = project(root, "noop", "true")
    iris = REPO / "examples" / "iris"
    up = Up(root)
    results = {}
    try:
        up.put("noop", {"project": {"uri": str(noop)}, "concurrencyPolicy": "Enqueue"}, root)
        up.put("iris", {"project": {"uri": str(iris), "parameters": {"C": "0.5"}}, "model": {"name": "iris-bench"},
                        "concurrencyPolicy": "Enqueue",
                        "gates": {"ct": {"metrics": [{"metric": "accuracy", "threshold": 0.9}]}}}, root)
        env = dict(os.environ, MLFLOW_TRACKING_URI=up.url, PATH=PYTHON_BIN + os.pathsep + os.environ["PATH"])
        for name, proj, extra in (("noop", noop, []), ("iris", iris, ["-P", "C=0.5"])):
            pipeline_ms, manual_ms = [], []
            for _ in range(n):
                run_id = api(up.url, f"/api/ctflow/v1/pipelines/{name}/trigger", {})["pipeline_run"]["id"]
                pipeline_ms.append(pipeline_duration(up, run_id))
                t0 = time.monotonic()
                subprocess.run([BIN, "run", str(proj), *extra, "--experiment-name", f"{name}-manual", "--allow-dirty"],
                               env=env, check=True, capture_output=True)
                manual_ms.append((time.monotonic() - t0) * 1000)
            p, m = statistics.median(pipeline_ms), statistics.median(manual_ms)
            results[name] = {"pipeline_run_ms_p50": round(p), "ctflow_run_by_hand_ms_p50": round(m),
                             "overhead_ms": round(p - m), "ratio": round(p / m, 2), "n": n}
    finally:
        up.stop()
    return {"benchmark": "pipeline run (trigger -> decision) vs ctflow run of the same project", **results}


def main():
    if not Path(BIN).exists():
        sys.exit(f"{BIN} does not exist: cargo build --profile dist -p ctflow-cli")
    chosen = sys.argv[1:] or ["latency", "overhead", "schedule"]
    for name in chosen:
        root = Path(tempfile.mkdtemp(prefix=f"ctflow-bench-{name}-"))
        (root / "pipelines").mkdir()
        try:
            result = {"latency": bench_latency, "schedule": bench_schedule, "overhead": bench_overhead}[name](root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
