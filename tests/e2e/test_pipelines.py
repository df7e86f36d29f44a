"""The CT loop end to end, with real processes: `ctflow up` (server + controller + worker
pool), pipelines from files and the API, the iris project trained by the real MLflow
client, gates, the `champion` alias, approvals, rollback, concurrency policies under
trigger storms, and a crash in the middle of training."""
import hashlib
import hmac
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from support import (TERMINAL, CtflowUp, api, champion_version, describe, drift_checks, install, iris_pipeline,
                     runs_of, scrape, sleeper_pipeline, sleeper_project, trigger, wait_for, wait_phase)

@pytest.fixture(scope="module")
def up(ctflow_bin, tmp_path_factory):
    instance = CtflowUp(ctflow_bin, tmp_path_factory.mktemp("ctflow-up")).start()
    yield instance
    instance.stop()


def test_new_data_retrains_and_promotes_then_a_worse_candidate_is_held(up, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "old.csv").write_text("x\n1\n")  # present before the pipeline: caught by the start-up rescan
    install(up, "iris-data", iris_pipeline("iris-data", "iris-data-model", f"""
  triggers:
    - data: {{ path: {incoming}/*.csv }}
"""))
    first = wait_for("the rescan's run", lambda: runs_of(up, "iris-data"), timeout=30)
    assert len(first) == 1 and first[0]["trigger"]["files"] == [str(incoming / "old.csv")]
    first_run = wait_phase(up, first[0]["id"], TERMINAL)
    assert first_run["phase"] == "Succeeded", describe(up, first_run["id"])
    assert first_run["decision"] == f"version {first_run['model_version']} is the first champion"

    # A new CSV, written the way writers do (temp file, then rename), starts exactly one run.
    tmp = incoming / ".batch2.tmp"
    tmp.write_text("x\n2\n")
    tmp.rename(incoming / "batch2.csv")
    second = wait_for("the new file's run", lambda: (lambda r: r if len(r) == 2 else None)(runs_of(up, "iris-data")), timeout=30)
    newest = second[0]
    assert newest["trigger"]["files"] == [str(incoming / "batch2.csv")]
    run = wait_phase(up, newest["id"], TERMINAL)
    assert run["phase"] == "Succeeded", describe(up, run["id"])
    assert champion_version(up.url, "iris-data-model") == str(run["model_version"])

    client = MlflowClient(up.url)
    mlflow_run = client.get_run(run["run_id"])
    assert mlflow_run.data.tags["ctflow.pipeline"] == "iris-data"
    assert mlflow_run.data.tags["ctflow.trigger"] == "data"
    assert mlflow_run.data.tags["ctflow.trigger.files"] == str(incoming / "batch2.csv")
    version = client.get_model_version("iris-data-model", str(run["model_version"]))
    assert version.current_stage == "Production" and version.run_id == run["run_id"]
    assert client.get_model_version("iris-data-model", str(first_run["model_version"])).current_stage == "Archived"

    # A worse candidate (tiny C underfits) fails the CT gate; the champion stays.
    champion_before = champion_version(up.url, "iris-data-model")
    worse = trigger(up, "iris-data", {"C": "0.0001"})["pipeline_run"]
    run = wait_phase(up, worse["id"], TERMINAL)
    assert run["phase"] == "GateFailed", describe(up, worse["id"])
    assert "accuracy" in run["decision"] and "needs >= 0.9" in run["decision"]
    # Numbers in a decision read as the dashboard shows them: six significant digits.
    assert not re.search(r"\d\.\d{7,}", run["decision"]), run["decision"]
    assert champion_version(up.url, "iris-data-model") == champion_before
    ct = [e for e in describe(up, worse["id"])["events"] if e.get("gate") == "ct"][0]
    assert ct["result"] == "fail"
    assert ct["detail"]["champion"]["version"] == int(champion_before)
    numbers = {c["check"]: c for c in ct["detail"]["comparisons"]}
    assert numbers["threshold"]["required"] == 0.9 and numbers["threshold"]["candidate"] < 0.9
    assert numbers["min_absolute_change"]["champion"] == 1.0
    # The ledger shows every move, made by the controller.
    history = api(up.url, "/api/ctflow/v1/models/iris-data-model/history")[1]["entries"]
    champion_moves = [e for e in history if e["action"] == "alias_set" and e["alias"] == "champion"]
    assert [e["to_version"] for e in champion_moves] == ["1", champion_before]
    assert all(e["user"] == "ctflow" and e["comment"].startswith("pipeline iris-data run") for e in champion_moves)


def test_manual_approval_rejection_and_rollback(up, ctflow_bin):
    install(up, "iris-manual", iris_pipeline("iris-manual", "iris-manual-model", gates="""
  gates:
    ct:
      metrics: [ { metric: accuracy, threshold: 0.9 } ]
    cd: { approval: manual, timeout: 1h, approvers: [alice, carol] }
"""))
    env = dict(os.environ, MLFLOW_TRACKING_URI=up.url)
    versions = []
    for n in range(2):
        out = subprocess.run([ctflow_bin, "pipelines", "trigger", "iris-manual", "-P", "C=0.5", "--wait", "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        described = json.loads(out.stdout)
        run = described["pipeline_run"]
        assert run["phase"] == "WaitingApproval"
        client = MlflowClient(up.url)
        assert client.get_model_version_by_alias("iris-manual-model", "challenger").version == str(run["model_version"])
        # Only the named approvers decide.
        status, body = api(up.url, f"/api/ctflow/v1/pipeline-runs/{run['id']}/approve", {"user": "bob"})
        assert status == 403 and body["error_code"] == "PERMISSION_DENIED", body
        assert "alice, carol" in body["message"]
        assert wait_phase(up, run["id"], ["WaitingApproval"], timeout=5)["phase"] == "WaitingApproval"
        out = subprocess.run([ctflow_bin, "pipelines", "approve", run["id"], "--user", "alice", "--comment", f"looks good {n}"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        done = wait_phase(up, run["id"], TERMINAL, timeout=30)
        assert done["phase"] == "Succeeded"
        assert done["decision"].startswith("approved by alice; version")
        versions.append(str(run["model_version"]))
        assert champion_version(up.url, "iris-manual-model") == versions[-1]

    # Approving something that is not waiting is a clear 400.
    status, body = api(up.url, f"/api/ctflow/v1/pipeline-runs/{run['id']}/approve", {"user": "alice"})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE" and "not waiting" in body["message"]

    # A rejection leaves the champion alone.
    out = subprocess.run([ctflow_bin, "pipelines", "trigger", "iris-manual", "--wait", "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=300)
    third = json.loads(out.stdout)["pipeline_run"]
    subprocess.run([ctflow_bin, "pipelines", "reject", third["id"], "--user", "carol", "--comment", "not today"],
                   env=env, check=True, capture_output=True, timeout=60)
    done = wait_phase(up, third["id"], TERMINAL, timeout=30)
    assert done["phase"] == "Rejected" and done["decision"] == "rejected by carol"
    assert champion_version(up.url, "iris-manual-model") == versions[-1]
    events = describe(up, third["id"])["events"]
    assert any(e["kind"] == "approval" and e["message"] == "rejected by carol: not today" for e in events)

    # Rollback moves champion to the previous champion, with stages, on the ledger.
    out = subprocess.run([ctflow_bin, "models", "rollback", "iris-manual-model", "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    moved = json.loads(out.stdout)
    assert (moved["from_version"], moved["to_version"]) == (versions[1], versions[0])
    client = MlflowClient(up.url)
    assert champion_version(up.url, "iris-manual-model") == versions[0]
    assert client.get_model_version("iris-manual-model", versions[0]).current_stage == "Production"
    assert client.get_model_version("iris-manual-model", versions[1]).current_stage == "Archived"
    # Nothing earlier to go back to.
    out = subprocess.run([ctflow_bin, "models", "rollback", "iris-manual-model"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "no earlier 'champion' version" in out.stderr


def test_forbid_skips_and_replace_cancels_under_a_trigger_storm(up, tmp_path):
    project = sleeper_project(tmp_path)
    install(up, "storm-forbid", sleeper_pipeline("storm-forbid", project, "Forbid"))
    install(up, "storm-replace", sleeper_pipeline("storm-replace", project, "Replace"))
    forbid = [trigger(up, "storm-forbid", {"seconds": "3"})["pipeline_run"]["id"] for _ in range(8)]
    replace = [trigger(up, "storm-replace", {"seconds": "3"})["pipeline_run"]["id"] for _ in range(5)]
    for ids, name in ((forbid, "storm-forbid"), (replace, "storm-replace")):
        wait_for(f"{name} to settle", lambda: all(describe(up, i)["pipeline_run"]["phase"] in TERMINAL for i in ids), timeout=60)
    phases = [describe(up, i)["pipeline_run"]["phase"] for i in forbid]
    assert phases.count("Succeeded") == 1 and phases.count("Skipped") == 7, phases
    assert phases[0] == "Succeeded"
    skipped = describe(up, forbid[1])["pipeline_run"]
    assert "concurrencyPolicy Forbid" in skipped["decision"]
    phases = [describe(up, i)["pipeline_run"]["phase"] for i in replace]
    assert phases[-1] == "Succeeded" and set(phases[:-1]) <= {"Canceled"}, phases
    # The replaced jobs' MLflow runs that had started were stopped.
    client = MlflowClient(up.url)
    for i in replace[:-1]:
        run = describe(up, i)["pipeline_run"]
        assert "replaced by pipeline run" in run["decision"]
        if run.get("run_id"):
            wait_for("the stopped run to be recorded", lambda: client.get_run(run["run_id"]).info.status in ("KILLED", "FAILED"), timeout=30)


def test_ci_gate_failure_and_gpu_jobs_on_a_machine_without_gpus(up, tmp_path):
    project = sleeper_project(tmp_path)
    install(up, "ci-fails", sleeper_pipeline("ci-fails", project, extra_spec="""
  gates:
    ci:
      checks:
        - { name: unit-tests, run: "echo 3 tests failed >&2; exit 3" }
"""))
    run_id = trigger(up, "ci-fails")["pipeline_run"]["id"]
    run = wait_phase(up, run_id, TERMINAL, timeout=60)
    assert run["phase"] == "GateFailed" and run["decision"] == "CI check(s) failed: unit-tests"
    ci = [e for e in describe(up, run_id)["events"] if e.get("gate") == "ci"][0]
    assert ci["result"] == "fail" and ci["message"] == "CI failed: 'unit-tests' exited with 3"
    assert "3 tests failed" in ci["detail"]["checks"][0]["output_tail"]
    mlflow_run = MlflowClient(up.url).get_run(run["run_id"])
    assert mlflow_run.info.status == "FAILED" and mlflow_run.data.tags["ctflow.ci"] == "failed"

    if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("this machine has nvidia-smi; the no-GPU path is checked on machines without one")
    install(up, "needs-gpu", sleeper_pipeline("needs-gpu", project, extra_spec="  resources: { gpu: 1 }\n  retry: { limit: 3 }\n"))
    run_id = trigger(up, "needs-gpu")["pipeline_run"]["id"]
    run = wait_phase(up, run_id, TERMINAL, timeout=30)
    assert run["phase"] == "Failed" and run["attempt"] == 1
    assert run["decision"] == "the job needs 1 GPU(s) but this machine has none"


def test_webhook_drift_and_dedupe(up, tmp_path):
    project = sleeper_project(tmp_path)
    install(up, "hooked", sleeper_pipeline("hooked", project, "Allow", """
  triggers:
    - webhook: { secretEnv: CTFLOW_E2E_WEBHOOK_SECRET, params: { seconds: /sleep }, tags: { commit: /after } }
    - drift: { reference: ref.csv, current: cur/*.csv, method: psi, threshold: 0.2 }
"""))
    # The secret lives in the server's environment (CtflowUp sets it).
    body = json.dumps({"after": "abc123", "sleep": "0.1"}).encode()
    good = "sha256=" + hmac.new(b"e2e-secret", body, hashlib.sha256).hexdigest()
    status, out = api(up.url, "/api/ctflow/v1/pipelines/hooked/webhook", body,
                      headers={"X-Hub-Signature-256": good, "X-GitHub-Delivery": "d-1"})
    assert status == 200, out
    run = wait_phase(up, out["pipeline_run"]["id"], TERMINAL, timeout=30)
    assert run["phase"] == "Succeeded" and run["trigger"]["parameters"] == {"seconds": "0.1"}
    mlflow_run = MlflowClient(up.url).get_run(run["run_id"])
    assert mlflow_run.data.params["seconds"] == "0.1"
    assert mlflow_run.data.tags["ctflow.webhook.commit"] == "abc123"
    assert mlflow_run.data.tags["ctflow.trigger"] == "webhook"
    # The same delivery again starts nothing.
    status, again = api(up.url, "/api/ctflow/v1/pipelines/hooked/webhook", body,
                        headers={"X-Hub-Signature-256": good, "X-GitHub-Delivery": "d-1"})
    assert status == 200 and again["duplicate"] is True and again["pipeline_run"]["id"] == run["id"]
    status, denied = api(up.url, "/api/ctflow/v1/pipelines/hooked/webhook", body,
                         headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert status == 403 and denied["error_code"] == "PERMISSION_DENIED"
    status, missing = api(up.url, "/api/ctflow/v1/pipelines/hooked/webhook", body)
    assert status == 401 and missing["error_code"] == "UNAUTHENTICATED"

    drift = {"triggerIndex": 1, "method": "psi", "statistic": 0.31, "threshold": 0.2, "rows": 800,
             "features": {"petal_length": 0.31}, "snapshot": "sha256:abc", "detectedAt": 1}
    status, out = api(up.url, "/api/ctflow/v1/pipelines/hooked/drift-events", drift)
    assert status == 200 and out["duplicate"] is False, out
    status, again = api(up.url, "/api/ctflow/v1/pipelines/hooked/drift-events", drift)
    assert again["duplicate"] is True and again["pipeline_run"]["id"] == out["pipeline_run"]["id"]
    status, bad = api(up.url, "/api/ctflow/v1/pipelines/hooked/drift-events", {**drift, "triggerIndex": 0})
    assert status == 400 and "no drift trigger at index 0" in bad["message"]
    status, bad = api(up.url, "/api/ctflow/v1/pipelines/hooked/drift-events", {**drift, "statistic": 0.1})
    assert status == 400 and "no drift" in bad["message"]

    # Manual triggers with a key are idempotent.
    first = trigger(up, "hooked", {"seconds": "0.1"}, key="release-42")
    second = trigger(up, "hooked", {"seconds": "0.1"}, key="release-42")
    assert second["duplicate"] and second["pipeline_run"]["id"] == first["pipeline_run"]["id"]


def test_bad_pipelines_get_clear_errors(up, ctflow_bin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: { name: Bad_Name }
spec:
  project: { uri: . }
  triggers: [ { schedule: { cron: "61 * * * *" } } ]
  gates: { ct: { metrics: [ { metric: acc } ] } }
""")
    out = subprocess.run([ctflow_bin, "pipelines", "apply", str(bad), "--tracking-uri", up.url], capture_output=True, text=True)
    assert out.returncode != 0
    for field in ("metadata.name", "spec.triggers[0].schedule.cron", "spec.gates.ct.metrics[0]", "spec.gates.ct"):
        assert field in out.stderr, out.stderr
    status, body = api(up.url, "/api/ctflow/v1/pipelines/x", {"apiVersion": "ctflow.dev/v1alpha1"}, method="PUT")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    status, body = api(up.url, "/api/ctflow/v1/pipelines/nope/trigger", {})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, body = api(up.url, "/api/ctflow/v1/pipeline-runs/nope")
    assert status == 404
    status, body = api(up.url, "/api/ctflow/v1/pipelines/nope/runs?phase=Done")
    assert status == 400 and "unknown pipeline run phase 'Done'" in body["message"]


def test_schedule_ticks_carry_their_logical_time(up, tmp_path):
    project = sleeper_project(tmp_path)
    install(up, "every-2s", sleeper_pipeline("every-2s", project, "Allow", """
  triggers:
    - schedule: { cron: "*/2 * * * * *", timezone: Europe/Berlin }
""", seconds=0))
    runs = wait_for("three ticks", lambda: (lambda r: r if len(r) >= 3 else None)(runs_of(up, "every-2s")), timeout=30)
    (up.pipelines_dir / "every-2s.yaml").unlink()
    wait_for("the pipeline to be removed", lambda: api(up.url, "/api/ctflow/v1/pipelines/every-2s")[0] == 404, timeout=30)
    ticks = sorted(r["trigger"]["logical_time"] for r in runs_of(up, "every-2s"))
    assert all(t % 2000 == 0 for t in ticks)
    assert len(set(ticks)) == len(ticks), "a tick was recorded twice"
    assert all(b - a == 2000 for a, b in zip(ticks, ticks[1:])), ticks
    done = wait_phase(up, runs[-1]["id"], TERMINAL, timeout=30)
    tags = MlflowClient(up.url).get_run(done["run_id"]).data.tags
    assert tags["ctflow.trigger"] == "schedule" and tags["ctflow.logical_time"].endswith("Z")


def test_a_crash_mid_training_loses_and_doubles_nothing(ctflow_bin, tmp_path):
    up = CtflowUp(ctflow_bin, tmp_path / "crash").start()
    try:
        project = sleeper_project(tmp_path)
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        install(up, "crashy", sleeper_pipeline("crashy", project, "Forbid", f"""
  retry: {{ limit: 1, backoff: 1s }}
  triggers:
    - data: {{ path: {incoming}/*.csv }}
""", seconds=4))
        first = trigger(up, "crashy", key="before-crash")["pipeline_run"]["id"]
        running = wait_for("the job's process", lambda: (lambda r: r if r.get("worker_pid") else None)(describe(up, first)["pipeline_run"]), timeout=60)
        pid = running["worker_pid"]
        os.kill(pid, 0)  # the training command runs
        up.kill()
        os.kill(pid, 0)  # ... and outlives the crash, as an orphan
        (incoming / "while-down.csv").write_text("x\n1\n")  # data arrives while ctflow is down
        up.start()
        # The orphan is stopped, the attempt is retried, the run ends once.
        wait_for("the orphan to be stopped", lambda: not Path(f"/proc/{pid}").exists() or _is_zombie(pid), timeout=30)
        run = wait_phase(up, first, TERMINAL, timeout=60)
        assert run["phase"] == "Succeeded" and run["attempt"] == 2, describe(up, first)
        events = [e["message"] for e in describe(up, first)["events"]]
        assert any("the worker stopped during attempt 1 (ctflow restarted); retrying" in m for m in events), events
        client = MlflowClient(up.url)
        mlflow_runs = client.search_runs([client.get_experiment_by_name("crashy").experiment_id])
        by_attempt = {r.data.tags["ctflow.attempt"]: r.info.status for r in mlflow_runs if r.data.tags.get("ctflow.pipeline_run") == first}
        assert by_attempt == {"1": "FAILED", "2": "FINISHED"}
        # The same trigger again is the same run; the file that arrived while down ran once.
        again = trigger(up, "crashy", key="before-crash")
        assert again["duplicate"] and again["pipeline_run"]["id"] == first
        data_runs = wait_for("the missed file's run", lambda: [r for r in runs_of(up, "crashy") if r["trigger"]["kind"] == "data"], timeout=30)
        assert len(data_runs) == 1 and data_runs[0]["trigger"]["files"] == [str(incoming / "while-down.csv")]
        wait_phase(up, data_runs[0]["id"], TERMINAL, timeout=60)
        up.stop()
        up.start()
        # Three reconcile passes of the new process, each over every unfinished run.
        wait_for("three reconcile passes after the restart",
                 lambda: scrape(up.url).get("ctflow_controller_reconcile_passes_total", 0) >= 3, timeout=30)
        assert len(runs_of(up, "crashy")) == 2
    finally:
        up.stop()


def _is_zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_the_loop_on_postgres(ctflow_bin, postgres, tmp_path):
    up = CtflowUp(ctflow_bin, tmp_path / "pg", backend_uri=postgres.new_database()).start()
    try:
        install(up, "iris-pg", iris_pipeline("iris-pg", "iris-pg-model"))
        run_id = trigger(up, "iris-pg")["pipeline_run"]["id"]
        run = wait_phase(up, run_id, TERMINAL)
        assert run["phase"] == "Succeeded", describe(up, run_id)
        assert champion_version(up.url, "iris-pg-model") == str(run["model_version"])
    finally:
        up.stop()


def test_insufficient_data_pauses_and_approvals_time_out(up):
    """A CT metric the run never logs is inconclusive: with `pause` a person decides;
    approving it moves on to the manual CD gate, whose timeout then rejects it."""
    install(up, "iris-pause", iris_pipeline("iris-pause", "iris-pause-model", gates="""
  gates:
    ct:
      metrics: [ { metric: f1_score, threshold: 0.5 } ]
      onInsufficientData: pause
    cd: { approval: manual, timeout: 2s }
"""))
    run_id = trigger(up, "iris-pause")["pipeline_run"]["id"]
    paused = wait_phase(up, run_id, {"Paused"} | TERMINAL)
    assert paused["phase"] == "Paused", describe(up, run_id)
    ct = [e for e in describe(up, run_id)["events"] if e.get("gate") == "ct"][0]
    assert ct["result"] == "inconclusive" and "logged no metric 'f1_score'" in ct["message"]
    status, _ = api(up.url, f"/api/ctflow/v1/pipeline-runs/{run_id}/approve", {"user": "dana"})
    assert status == 200
    waiting = wait_phase(up, run_id, {"WaitingApproval"} | TERMINAL, timeout=30)
    assert waiting["phase"] == "WaitingApproval"
    assert MlflowClient(up.url).get_model_version_by_alias("iris-pause-model", "challenger").version == str(waiting["model_version"])
    done = wait_phase(up, run_id, TERMINAL, timeout=30)
    assert done["phase"] == "Rejected" and done["decision"] == "no answer before the approval timeout"
    try:
        MlflowClient(up.url).get_model_version_by_alias("iris-pause-model", "champion")
        raise AssertionError("a timed-out approval must not promote")
    except Exception as e:  # noqa: BLE001 - the client raises MlflowException
        assert "alias champion not found" in str(e)


def test_timeouts_stop_jobs_and_enqueue_runs_one_after_another(up, tmp_path):
    project = sleeper_project(tmp_path)
    install(up, "slow", sleeper_pipeline("slow", project, extra_spec="  timeout: 1s\n  retry: { limit: 2 }\n", seconds=60))
    run_id = trigger(up, "slow")["pipeline_run"]["id"]
    run = wait_phase(up, run_id, TERMINAL, timeout=60)
    assert run["phase"] == "Failed" and run["decision"] == "stopped after the timeout of 1s" and run["attempt"] == 1
    assert MlflowClient(up.url).get_run(run["run_id"]).info.status == "KILLED"

    install(up, "queued", sleeper_pipeline("queued", project, "Enqueue", seconds=1))
    ids = [trigger(up, "queued")["pipeline_run"]["id"] for _ in range(3)]
    runs = [wait_phase(up, i, TERMINAL, timeout=60) for i in ids]
    assert [r["phase"] for r in runs] == ["Succeeded"] * 3
    for earlier, later in zip(runs, runs[1:]):
        assert earlier["end_time"] <= later["start_time"], "Enqueue runs one at a time, in order"


def test_drift_on_new_data_retrains_and_every_check_is_on_record(up, tmp_path):
    """The drift watcher: a file like the reference is checked and recorded, a drifted
    file fires the pipeline's drift trigger and it retrains."""
    import numpy as np

    rng = np.random.default_rng(3)
    data = tmp_path / "drift-data"
    (data / "current").mkdir(parents=True)

    def write(path, shift, n):
        x = rng.normal(shift, 1, n).round(5)
        kind = rng.choice(["a", "b"], n)
        path.write_text("x,kind\n" + "\n".join(f"{a},{b}" for a, b in zip(x, kind)) + "\n")

    write(data / "reference.csv", 0.0, 2000)
    project = sleeper_project(tmp_path)
    install(up, "drifty", sleeper_pipeline("drifty", project, "Allow", f"""
  triggers:
    - drift: {{ reference: {data}/reference.csv, current: {data}/current/*.csv, method: psi, threshold: 0.2, minRows: 100 }}
""", seconds=0))
    client = MlflowClient(up.url)

    def checks():
        return drift_checks(client, "drifty")

    write(data / "current" / "day1.csv", 0.0, 1500)
    first = wait_for("the first drift check", lambda: checks(), timeout=30)
    assert len(first) == 1 and first[0].data.tags["ctflow.drift.dataset_drift"] == "false"
    assert "x.statistic" in first[0].data.metrics and first[0].data.metrics["drift.drifted_columns"] == 0
    assert runs_of(up, "drifty") == []

    write(data / "current" / "day2.csv", 1.5, 1500)
    drifted = wait_for("the drift run", lambda: runs_of(up, "drifty"), timeout=30)
    assert len(drifted) == 1 and drifted[0]["trigger"]["kind"] == "drift"
    assert drifted[0]["trigger"]["files"] == [str(data / "current" / "day2.csv")]
    run = wait_phase(up, drifted[0]["id"], TERMINAL, timeout=30)
    assert run["phase"] == "Succeeded"
    all_checks = wait_for("both checks to finish", lambda: (lambda c: c if len(c) == 2 else None)(checks()), timeout=30)
    assert [c.data.tags["ctflow.drift.dataset_drift"] for c in all_checks] == ["false", "true"]
    check = all_checks[1]
    assert check.data.metrics["x.drifted"] == 1.0
    assert MlflowClient(up.url).get_run(run["run_id"]).data.tags["ctflow.drift.check_run"] == check.info.run_id
    report_path = client.download_artifacts(check.info.run_id, "drift_report.json", str(tmp_path))
    report = json.loads(Path(report_path).read_text())
    assert report["dataset"]["drifted"] is True
    assert {c["column"]: c["method"] for c in report["columns"]} == {"x": "psi", "kind": "psi"}
    assert len(next(c for c in report["columns"] if c["column"] == "x")["bin_edges"]) == 11
    page = Path(client.download_artifacts(check.info.run_id, "drift_report.html", str(tmp_path))).read_text()
    assert "Dataset drift" in page and page.count("<svg") == 2


class EventStream:
    """Reads `GET /api/ctflow/v1/events` (server-sent events) on a thread."""

    def __init__(self, url):
        import threading

        import requests

        self.events = []
        self.response = requests.get(url + "/api/ctflow/v1/events", stream=True, timeout=(5, 120))
        assert self.response.status_code == 200
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        name = None
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and name:
                    self.events.append((name, json.loads(line.split(":", 1)[1])))
                    name = None
        except Exception:  # the stream is closed at the end of the test
            pass

    def of(self, kind):
        return [body for name, body in self.events if name == kind]

    def close(self):
        self.response.close()


def test_windows_and_the_watch_event_stream(up, tmp_path):
    """A drift trigger over the last 1000 rows of all files, next to a data trigger on the
    same files: every arrival is announced as `data_arrived`, the drift as `drift_detected`,
    each after its pipeline run was recorded."""
    import numpy as np

    rng = np.random.default_rng(11)
    data = tmp_path / "window-data"
    (data / "incoming").mkdir(parents=True)

    def write(path, shift, n):
        x = rng.normal(shift, 1, n).round(5)
        y = rng.normal(5, 2, n).round(5)
        path.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in zip(x, y)) + "\n")

    write(data / "reference.csv", 0.0, 2000)
    project = sleeper_project(tmp_path)
    stream = EventStream(up.url)
    try:
        install(up, "windowed", sleeper_pipeline("windowed", project, "Allow", f"""
  triggers:
    - data: {{ path: {data}/incoming/*.csv }}
    - drift:
        reference: {data}/reference.csv
        current: {data}/incoming/*.csv
        window: {{ lastRows: 1000 }}
        columns: {{ y: {{ method: psi, threshold: 0.2 }} }}
        critical: [x]
""", seconds=0))
        client = MlflowClient(up.url)
        write(data / "incoming" / "day1.csv", 0.0, 1500)
        arrived = wait_for("day1 announced", lambda: stream.of("data_arrived"), timeout=30)
        assert arrived[0]["pipeline"] == "windowed" and arrived[0]["trigger_index"] == 0
        assert arrived[0]["files"] == [str(data / "incoming" / "day1.csv")]
        assert describe(up, arrived[0]["pipeline_run"])["pipeline_run"]["trigger"]["kind"] == "data"

        first = wait_for("the first check", lambda: drift_checks(client, "windowed"), timeout=30)
        assert first[0].data.tags["ctflow.drift.dataset_drift"] == "false"
        assert first[0].data.metrics["drift.current_rows"] == 1000

        # 600 shifted rows: the window holds 400 of day1 and all of day2, and x (critical,
        # judged by Evidently's default test at this size) drifts.
        write(data / "incoming" / "day2.csv", 1.5, 600)
        detected = wait_for("the drift announced", lambda: stream.of("drift_detected"), timeout=30)
        event = detected[0]
        assert event["event"]["pipeline"] == "windowed" and event["event"]["rows"] == 1000
        run = describe(up, event["pipeline_run"])["pipeline_run"]
        assert run["trigger"]["kind"] == "drift"
        assert run["trigger"]["files"] == [str(data / "incoming" / "day2.csv")]
        check = client.get_run(event["check_run"])
        assert check.data.tags["ctflow.drift.dataset_drift"] == "true"
        assert check.data.tags["ctflow.drift.files"] == f"{data}/incoming/day1.csv,{data}/incoming/day2.csv"
        assert check.data.metrics["x.drifted"] == 1.0
        report = json.loads(Path(client.download_artifacts(check.info.run_id, "drift_report.json", str(tmp_path))).read_text())
        methods = {c["column"]: c["method"] for c in report["columns"]}
        assert methods == {"x": "wasserstein", "y": "psi"}
        assert report["dataset"]["critical_drifted"] == ["x"]
        assert len(wait_for("day2 announced", lambda: (lambda a: a if len(a) == 2 else None)(stream.of("data_arrived")), timeout=30)) == 2
        # The checks are on /metrics too.
        metrics = scrape(up.url)
        assert metrics['ctflow_drift_checks_total{pipeline="windowed",result="no_drift"}'] == 1
        assert metrics['ctflow_drift_checks_total{pipeline="windowed",result="drift"}'] == 1
        assert metrics['ctflow_drift_share{pipeline="windowed"}'] >= 0.5
        assert metrics['ctflow_drift_score{pipeline="windowed",column="x",method="wasserstein"}'] > 0.1
        assert metrics['ctflow_watch_triggers_total{pipeline="windowed",kind="data"}'] == 2
    finally:
        stream.close()


def test_metrics_move_with_a_ct_run(up, tmp_path):
    """Prometheus `/metrics` during a CT run: pipeline runs by phase, the job's duration,
    the workers and the API traffic by route (the drift series are checked in the windows
    test)."""
    project = sleeper_project(tmp_path)
    install(up, "metered", sleeper_pipeline("metered", project, "Allow", seconds=1))
    before = scrape(up.url)
    assert before["ctflow_workers"] == up.workers
    assert 'ctflow_pipeline_runs{pipeline="metered",phase="Succeeded"}' not in before
    run_id = trigger(up, "metered")["pipeline_run"]["id"]
    running = 'ctflow_pipeline_runs{pipeline="metered",phase="Running"}'
    during = wait_for("the job to run", lambda: (lambda m: m if m.get(running) == 1 else None)(scrape(up.url)),
                      timeout=30, interval=0.1)
    assert during["ctflow_workers_busy"] >= 1
    assert wait_phase(up, run_id, TERMINAL, timeout=60)["phase"] == "Succeeded"
    after = scrape(up.url)
    assert after['ctflow_pipeline_runs{pipeline="metered",phase="Succeeded"}'] == 1
    assert after['ctflow_job_duration_seconds_count{pipeline="metered",status="succeeded"}'] == 1
    assert after['ctflow_job_duration_seconds_sum{pipeline="metered",status="succeeded"}'] >= 1.0
    route = 'ctflow_http_requests_total{method="POST",route="/api/ctflow/v1/pipelines/{name}/trigger",status="200"}'
    assert after[route] == before.get(route, 0) + 1

