"""Job dispatch over the two buses, measured side by side in one session:

  memory   `ctflow up --workers 3`: controller and workers in one process, in-process bus.
  nats     `ctflow server --bus` + `ctflow controller` + three `ctflow worker` processes on
           a real nats-server (JetStream); the same SQLite store and no-op project.

For each: trigger-to-start latency (a pipeline run's recorded trigger -> its MLflow run
created by the worker) for triggers sent one at a time, and dispatch throughput: a burst
of N triggers, from the first request to the last pipeline run Succeeded.

Usage: python bench/dispatch_bench.py [memory|nats ...] (default: both)
Env: CTFLOW_BENCH_BIN (default target/dist/ctflow), NATS_SERVER (default: the venv's),
SINGLE_RUNS (30), BURST (200). Prints one JSON line per bus.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct_bench import BIN, PYTHON_BIN, TERMINAL, api, free_port, wait  # noqa: E402

NATS_SERVER = os.environ.get("NATS_SERVER", str(Path(sys.executable).parent / "nats-server"))
SINGLE_RUNS = int(os.environ.get("SINGLE_RUNS", "30"))
BURST = int(os.environ.get("BURST", "200"))

PIPELINE = {
    "apiVersion": "ctflow.dev/v1alpha1",
    "kind": "TrainingPipeline",
    "metadata": {"name": "noop"},
    "spec": {"project": {"uri": "", "envManager": "local"}, "concurrencyPolicy": "Allow"},
}


def env():
    e = dict(os.environ)
    e["PATH"] = PYTHON_BIN + os.pathsep + e.get("PATH", "")
    e["CTFLOW_LOG"] = "warn"
    return e


def healthy(url):
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Processes:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def spawn(self, name, args, health=None):
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env(),
                                start_new_session=True)
        self.procs.append((proc, log))
        if health:
            wait(lambda: healthy(health), 60, f"{name} healthy")
        return proc

    def stop(self):
        for proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()


def noop_project(workdir):
    project = workdir / "noop"
    project.mkdir()
    (project / "MLproject").write_text("name: noop\nentry_points:\n  main:\n    command: \"true\"\n")
    return project


def start_memory(workdir, procs):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.spawn("up", [BIN, "up", "--port", str(port), "--backend-store-uri", f"sqlite:///{workdir}/ctflow.db",
                       "--artifacts-destination", str(workdir / "artifacts"), "--logs-dir", str(workdir / "logs"),
                       "--workers", "3"], health=url)
    return url


def start_nats(workdir, procs):
    nats_port = free_port()
    procs.spawn("nats", [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", str(workdir / "js")])
    bus = ["--bus", f"nats://127.0.0.1:{nats_port}"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = f"sqlite:///{workdir}/ctflow.db"
    procs.spawn("server", [BIN, "server", "--port", str(port), "--backend-store-uri", db,
                           "--artifacts-destination", str(workdir / "artifacts"), *bus], health=url)
    ops = free_port()
    procs.spawn("controller", [BIN, "controller", "--backend-store-uri", db, "--ops-port", str(ops), *bus],
                health=f"http://127.0.0.1:{ops}")
    wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{ops}/ready", timeout=2).status == 200
         if healthy(f"http://127.0.0.1:{ops}") else False, 60, "the controller leads")
    for i in range(3):
        ops = free_port()
        procs.spawn(f"worker-{i}", [BIN, "worker", "--tracking-uri", url, "--concurrency", "1",
                                    "--logs-dir", str(workdir / "logs"), "--ops-port", str(ops), *bus],
                    health=f"http://127.0.0.1:{ops}")
    return url


def install(url, project):
    pipeline = json.loads(json.dumps(PIPELINE))
    pipeline["spec"]["project"]["uri"] = str(project)
    api(url, "/api/ctflow/v1/pipelines/noop", pipeline, method="PUT")


def trigger(url, key):
    return api(url, "/api/ctflow/v1/pipelines/noop/trigger", {"key": key})["pipeline_run"]["id"]


def runs(url):
    return api(url, "/api/ctflow/v1/pipelines/noop/runs?max_results=1000")["pipeline_runs"]


def mlflow_start(url, run_id):
    return api(url, f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]["info"]["start_time"]


def measure(bus, start):
    workdir = Path(tempfile.mkdtemp(prefix=f"ctflow-dispatch-{bus}-"))
    procs = Processes(workdir)
    try:
        url = start(workdir, procs)
        install(url, noop_project(workdir))
        # Warm-up: the first run creates the experiment.
        first = trigger(url, "warm-up")
        wait(lambda: next((r for r in runs(url) if r["id"] == first and r["phase"] in TERMINAL), None), 60, "warm-up")
        latencies = []
        for i in range(SINGLE_RUNS):
            run = trigger(url, f"single-{i}")
            done = wait(lambda: next((r for r in runs(url) if r["id"] == run and r["phase"] in TERMINAL), None), 60,
                        "a single run")
            assert done["phase"] == "Succeeded", done
            latencies.append(mlflow_start(url, done["run_id"]) - done["creation_time"])
        before = len(runs(url))
        began = time.perf_counter()
        for i in range(BURST):
            trigger(url, f"burst-{i}")
        settled = wait(lambda: (lambda rs: rs if sum(r["phase"] in TERMINAL for r in rs) == before + BURST else None)(
            runs(url)), 600, "the burst")
        took = time.perf_counter() - began
        phases = {}
        for r in settled:
            phases[r["phase"]] = phases.get(r["phase"], 0) + 1
        latencies.sort()
        return {
            "bus": bus,
            "workers": 3,
            "single_runs": SINGLE_RUNS,
            "trigger_to_start_ms_p50": statistics.median(latencies),
            "trigger_to_start_ms_p90": latencies[int(len(latencies) * 0.9) - 1],
            "trigger_to_start_ms_max": latencies[-1],
            "burst": BURST,
            "burst_seconds": round(took, 3),
            "jobs_per_second": round(BURST / took, 2),
            "phases": phases,
        }
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    which = sys.argv[1:] or ["memory", "nats"]
    starts = {"memory": start_memory, "nats": start_nats}
    for bus in which:
        print(json.dumps(measure(bus, starts[bus])), flush=True)


if __name__ == "__main__":
    main()
