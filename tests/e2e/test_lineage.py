"""Training data lineage end to end: a pipeline that names its data (`spec.data`) records
a snapshot of those files before each run, the iris project trains on exactly the files
of its manifest (so the model changes with the data), the MLflow run carries the snapshot
as a dataset input the real client reads, and a file changed after the snapshot fails the
job with the reason instead of training on something else."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from support import (IRIS, TERMINAL, CtflowUp, api, champion_version, describe, drift_checks, install, iris_pipeline,
                     runs_of, trigger, wait_for, wait_phase)


@pytest.fixture(scope="module")
def up(ctflow_bin, tmp_path_factory):
    instance = CtflowUp(ctflow_bin, tmp_path_factory.mktemp("ctflow-up")).start()
    yield instance
    instance.stop()


def data_folder(root):
    data = root / "data"
    (data / "incoming").mkdir(parents=True)
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    return data


def iris_rows(first, count):
    lines = (IRIS / "data" / "iris.csv").read_text().splitlines()
    return "\n".join([lines[0]] + lines[1 + first:1 + first + count]) + "\n"


def test_training_reads_its_snapshot_and_the_run_records_it(up, ctflow_bin, tmp_path):
    data = data_folder(tmp_path)
    install(up, "iris-lineage", iris_pipeline("iris-lineage", "iris-lineage-model", f"""
  data:
    paths: [{data}/iris.csv, {data}/incoming/*.csv]
  triggers:
    - data: {{ path: {data}/incoming/*.csv }}
"""))
    first = trigger(up, "iris-lineage")["pipeline_run"]
    run = wait_phase(up, first["id"], TERMINAL)
    assert run["phase"] == "Succeeded", describe(up, first["id"])
    described = describe(up, first["id"])
    snapshot = described["data_snapshot"]
    assert run["snapshot_id"] == snapshot["id"]
    assert [f["path"] for f in snapshot["files"]] == [str(data / "iris.csv")]
    assert snapshot["rows"] == 150
    assert [c["name"] for c in snapshot["schema"]] == [
        "sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    assert any(e["kind"] == "data" and "150 rows" in e["message"] for e in described["events"])

    client = MlflowClient(up.url)
    mlflow_run = client.get_run(run["run_id"])
    assert mlflow_run.data.metrics["training_rows"] == 150
    assert mlflow_run.data.tags["ctflow.data.snapshot"] == snapshot["id"]
    inputs = mlflow_run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "iris-lineage-training" and dataset.digest == snapshot["id"][:16]
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert json.loads(dataset.profile)["num_rows"] == 150
    assert json.loads(dataset.schema)["mlflow_colspec"][0] == {"type": "double", "name": "sepal_length",
                                                              "required": True}
    assert json.loads(dataset.source)["files"] == [str(data / "iris.csv")]

    # A new batch arrives (written, then renamed into place): the run it starts trains on
    # the base data plus the batch, and its snapshot holds the batch's digest.
    batch = iris_rows(50, 30)
    tmp = data / "incoming" / ".batch1.tmp"
    tmp.write_text(batch)
    tmp.rename(data / "incoming" / "batch1.csv")
    second = wait_for("the new batch's run",
                      lambda: (lambda r: r[0] if len(r) == 2 else None)(runs_of(up, "iris-lineage")), timeout=30)
    run = wait_phase(up, second["id"], TERMINAL)
    assert run["phase"] in ("Succeeded", "GateFailed"), describe(up, second["id"])
    snapshot = describe(up, second["id"])["data_snapshot"]
    assert snapshot["rows"] == 180
    new = [f for f in snapshot["files"] if f["path"].endswith("batch1.csv")]
    assert len(new) == 1 and new[0]["sha256"] == hashlib.sha256(batch.encode()).hexdigest() and new[0]["rows"] == 30
    assert client.get_run(run["run_id"]).data.metrics["training_rows"] == 180

    # `ctflow models lineage` walks version <- run <- snapshot <- trigger <- code.
    env = dict(os.environ, MLFLOW_TRACKING_URI=up.url)
    assert run["model_version"], run  # the candidate is registered, whatever the gates said
    target = f"iris-lineage-model/{run['model_version']}"
    out = subprocess.run([ctflow_bin, "models", "lineage", target, "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lineage = json.loads(out.stdout)
    assert lineage["run"]["run_id"] == run["run_id"] and lineage["run"]["params"]["C"] == "0.5"
    assert lineage["data"]["id"] == snapshot["id"]
    assert new[0]["sha256"] in [f["sha256"] for f in lineage["data"]["files"]]
    assert lineage["trigger"]["kind"] == "data" and lineage["trigger"]["files"] == [str(data / "incoming" / "batch1.csv")]
    assert lineage["pipeline_run"]["id"] == second["id"]
    assert lineage["code"]["entry_point"] == "main" and lineage["code"]["source"]
    assert f"models:/{target}" in lineage["model"]["uris"]
    text = subprocess.run([ctflow_bin, "models", "lineage", target], env=env, capture_output=True, text=True,
                          timeout=60)
    assert text.returncode == 0, text.stderr
    assert f"<- data  snapshot {snapshot['id']} (2 files, 180 rows)" in text.stdout, text.stdout
    assert "batch1.csv  sha256 " + new[0]["sha256"][:16] in text.stdout, text.stdout
    assert "<- trigger data (new files: " in text.stdout and "<- code  " in text.stdout, text.stdout
    described = subprocess.run([ctflow_bin, "pipelines", "describe", second["id"]], env=env, capture_output=True,
                               text=True, timeout=60)
    assert f"data:      snapshot {snapshot['id']} (2 files, 180 rows)" in described.stdout, described.stdout
    described = subprocess.run([ctflow_bin, "pipelines", "describe", second["id"], "--output", "json"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert json.loads(described.stdout)["data_snapshot"]["id"] == snapshot["id"], described.stdout
    missing = subprocess.run([ctflow_bin, "models", "lineage", "iris-lineage-model@nope"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "has no alias 'nope'" in missing.stderr, missing.stderr


def test_a_file_changed_after_the_snapshot_fails_the_job_with_the_reason(up, tmp_path):
    data = data_folder(tmp_path)
    # The CI check runs after the snapshot and before training: it rewrites a data file.
    install(up, "iris-changed", iris_pipeline("iris-changed", "iris-changed-model", f"""
  data:
    paths: [{data}/*.csv]
""", gates=f"""
  gates:
    ci:
      checks:
        - name: tamper
          run: "echo 5.0,3.0,1.0,0.2,0 >> {data}/iris.csv"
    ct:
      metrics: [ {{ metric: accuracy, threshold: 0.9 }} ]
"""))
    started = trigger(up, "iris-changed")["pipeline_run"]
    run = wait_phase(up, started["id"], TERMINAL)
    assert run["phase"] == "Failed", describe(up, started["id"])
    assert "iris.csv changed after the snapshot" in run["decision"], run["decision"]
    mlflow_run = MlflowClient(up.url).get_run(run["run_id"])
    assert mlflow_run.info.status == "FAILED"
    assert "training_rows" not in mlflow_run.data.metrics


def test_no_training_data_fails_the_run_before_any_attempt(up, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    install(up, "iris-nodata", iris_pipeline("iris-nodata", "iris-nodata-model", f"""
  data:
    paths: [{empty}/*.csv]
"""))
    started = trigger(up, "iris-nodata")["pipeline_run"]
    run = wait_phase(up, started["id"], TERMINAL, timeout=30)
    assert run["phase"] == "Failed" and run["attempt"] == 0, run
    assert run["decision"].startswith("cannot snapshot the training data: no training data"), run["decision"]


def drop(folder, name, *generator_args):
    """Writes a batch made by the example's make_drifted.py into `folder` (renamed into
    place, as the script does), and returns its bytes."""
    out = folder / name
    subprocess.run([sys.executable, str(IRIS / "make_drifted.py"), "--out", str(out), *generator_args],
                   check=True, capture_output=True, timeout=60)
    return out.read_bytes()


def test_a_champion_reference_follows_promotions_and_rollback(up, tmp_path):
    """`reference: champion`: each drift check compares the new batch with the champion's
    training snapshot, so once a model trained on a shifted distribution is champion, more
    of that distribution no longer drifts (no retrain storm) while a third one does; a
    rollback moves the reference back with the alias."""
    data = data_folder(tmp_path)
    incoming = data / "incoming"
    install(up, "iris-follow", iris_pipeline("iris-follow", "iris-follow-model", f"""
  data:
    paths: [{data}/iris.csv, {incoming}/*.csv]
    window: {{ lastRows: 300 }}
  triggers:
    - drift:
        reference: champion
        current: {incoming}/*.csv
        features: [sepal_length, sepal_width, petal_length, petal_width]
""", gates="""
  gates:
    ct:
      metrics: [ { metric: accuracy, threshold: 0.8 } ]
"""))
    client = MlflowClient(up.url)

    def snapshot_of(pipeline_run):
        return describe(up, pipeline_run["id"])["data_snapshot"]

    def next_check(count):
        checks = wait_for(f"drift check {count}",
                          lambda: (lambda c: c if len(c) >= count else None)(drift_checks(client, "iris-follow")),
                          timeout=60)
        return checks[count - 1]

    def drift_run(count):
        """The pipeline run of the count-th drift event, once it has ended."""
        def started():
            runs = [r for r in runs_of(up, "iris-follow") if r["trigger"]["kind"] == "drift"]
            return runs[-count] if len(runs) >= count else None  # newest first
        return wait_phase(up, wait_for(f"drift run {count}", started, timeout=60)["id"], TERMINAL)

    # Before a champion exists, arrived files are not judged.
    first = wait_phase(up, trigger(up, "iris-follow")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    v1 = snapshot_of(first)
    assert champion_version(up.url, "iris-follow-model") == "1"

    # A shifted distribution drifts against what v1 learned, and the retrain learns it.
    shifted = drop(incoming, "shifted-1.csv", "--seed", "1")
    check = next_check(1)
    tags = check.data.tags
    assert tags["ctflow.drift.dataset_drift"] == "true", tags
    assert tags["ctflow.drift.reference"] == "champion"
    assert (tags["ctflow.drift.reference_snapshot"], tags["ctflow.drift.reference_version"]) == (v1["id"], "1")
    inputs = {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in check.inputs.dataset_inputs}
    assert set(inputs) == {"reference", "current"}
    assert inputs["reference"].digest == v1["id"][:16] and json.loads(inputs["reference"].profile)["num_rows"] == 150
    assert json.loads(inputs["current"].profile)["num_rows"] == 300
    retrain = drift_run(1)
    assert retrain["phase"] == "Succeeded", describe(up, retrain["id"])
    v2 = snapshot_of(retrain)
    assert [f["sha256"] for f in v2["files"]] == [hashlib.sha256(shifted).hexdigest()]
    assert champion_version(up.url, "iris-follow-model") == "2"
    reference = describe(up, retrain["id"])["pipeline_run"]["trigger"]["detail"]["reference"]
    assert reference == f"iris-follow-model version 1 (champion), training snapshot {v1['id'][:16]}", reference

    # More of the same distribution: compared with v2's data, no drift, no retrain.
    drop(incoming, "shifted-2.csv", "--seed", "2")
    check = next_check(2)
    assert check.data.tags["ctflow.drift.dataset_drift"] == "false", check.data.metrics
    assert check.data.tags["ctflow.drift.reference_snapshot"] == v2["id"]
    assert len([r for r in runs_of(up, "iris-follow") if r["trigger"]["kind"] == "drift"]) == 1

    # A third distribution drifts again; its retrain makes v3 the champion.
    drop(incoming, "third-1.csv", "--seed", "3", "--shift", "2.5")
    check = next_check(3)
    assert check.data.tags["ctflow.drift.dataset_drift"] == "true"
    assert check.data.tags["ctflow.drift.reference_version"] == "2"
    assert drift_run(2)["phase"] == "Succeeded"
    assert champion_version(up.url, "iris-follow-model") == "3"

    # Rolled back to v2, the reference is v2's data again: the third distribution drifts.
    status, body = api(up.url, "/api/ctflow/v1/models/iris-follow-model/rollback", {})
    assert status == 200 and body["to_version"] == "2", body
    drop(incoming, "third-2.csv", "--seed", "4", "--shift", "2.5")
    check = next_check(4)
    assert check.data.tags["ctflow.drift.dataset_drift"] == "true"
    assert (check.data.tags["ctflow.drift.reference_version"], check.data.tags["ctflow.drift.reference_snapshot"]) \
        == ("2", v2["id"])


def test_rerun_reproduces_a_run_and_diff_shows_what_changed(up, ctflow_bin, tmp_path):
    """`ctflow pipelines rerun` trains again on the original's snapshot and parameters
    (new files since are not in it) and reproduces its metric; `ctflow models diff` shows
    the data, parameter and metric changes between two versions; a rerun whose data
    changed is refused with the reason."""
    data = data_folder(tmp_path)
    install(up, "iris-rerun", iris_pipeline("iris-rerun", "iris-rerun-model", f"""
  data:
    paths: [{data}/iris.csv, {data}/incoming/*.csv]
""", gates="""
  gates:
    ct:
      metrics: [ { metric: accuracy, threshold: 0.5 } ]
"""))
    env = dict(os.environ, MLFLOW_TRACKING_URI=up.url)
    client = MlflowClient(up.url)

    def ctflow(*args):
        return subprocess.run([ctflow_bin, *args], env=env, capture_output=True, text=True, timeout=300)

    first = wait_phase(up, trigger(up, "iris-rerun", params={"C": "0.05"})["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    (data / "incoming" / "batch.csv").write_text(iris_rows(0, 40))
    second = wait_phase(up, trigger(up, "iris-rerun")["pipeline_run"]["id"], TERMINAL)
    assert second["phase"] == "Succeeded", describe(up, second["id"])

    out = ctflow("pipelines", "rerun", first["id"], "--wait", "--output", "json")
    assert out.returncode == 0, out.stderr
    rerun = json.loads(out.stdout)["pipeline_run"]
    assert rerun["phase"] == "Succeeded" and rerun["snapshot_id"] == first["snapshot_id"], rerun
    assert rerun["trigger"]["kind"] == "rerun" and rerun["trigger"]["detail"]["rerun_of"] == first["id"]
    original, again = client.get_run(first["run_id"]), client.get_run(rerun["run_id"])
    assert again.data.params["C"] == "0.05"
    assert again.data.metrics["training_rows"] == original.data.metrics["training_rows"] == 150
    assert again.data.metrics["accuracy"] == original.data.metrics["accuracy"]

    out = ctflow("models", "diff", "iris-rerun-model", "1", "2", "--output", "json")
    assert out.returncode == 0, out.stderr
    diff = json.loads(out.stdout)
    assert diff["data"]["same"] is False and diff["data"]["unchanged"] == 1
    assert [f["path"] for f in diff["data"]["added"]] == [str(data / "incoming" / "batch.csv")]
    assert diff["data"]["added"][0]["rows"] == 40
    assert diff["params"] == [{"name": "C", "a": "0.05", "b": "0.5"}]
    rows = next(m for m in diff["metrics"] if m["name"] == "training_rows")
    assert (rows["a"], rows["b"], rows["change"]) == (150, 190, 40)
    out = ctflow("models", "diff", "iris-rerun-model", "1", f"@champion")
    assert out.returncode == 0, out.stderr
    assert "iris-rerun-model: version 1 -> version 3" in out.stdout, out.stdout
    assert "(the same data)" in out.stdout and "params   no differences" in out.stdout, out.stdout
    out = ctflow("models", "diff", "iris-rerun-model", "1", "2")
    assert f"  + {data / 'incoming' / 'batch.csv'}  sha256 " in out.stdout, out.stdout
    assert "params   C: 0.05 -> 0.5" in out.stdout, out.stdout

    # The base file changes: the first run's snapshot can no longer be trained on.
    with open(data / "iris.csv", "a") as f:
        f.write("5.0,3.0,1.0,0.2,0\n")
    out = ctflow("pipelines", "rerun", first["id"])
    assert out.returncode != 0
    assert "cannot train on the recorded data snapshot again" in out.stderr, out.stderr
    assert "iris.csv changed after the snapshot" in out.stderr, out.stderr


def gate_comparisons(up, pipeline_run_id):
    events = describe(up, pipeline_run_id)["events"]
    gate = [e for e in events if isinstance(e.get("detail"), dict) and "comparisons" in e["detail"]]
    assert gate, events
    return gate[-1]["detail"]


@pytest.mark.parametrize("against, phase", [(None, "Succeeded"), ("training", "GateFailed")])
def test_the_gate_compares_candidate_and_champion_on_the_same_data(up, tmp_path, against, phase):
    """The champion scored 1.0 on its own easy test split long ago; the candidate, trained
    on a shifted batch, scores less on its harder one. On the same data (the evaluation
    step scores both on the candidate's snapshot) the candidate is far better, and that
    decides; `against: training` keeps the stale comparison, which fails it."""
    name = f"iris-fair-{against or 'same'}"
    data = data_folder(tmp_path)
    choice = f", against: {against}" if against else ""
    install(up, name, iris_pipeline(name, f"{name}-model", f"""
  data:
    paths: [{data}/iris.csv, {data}/incoming/*.csv]
    window: {{ lastRows: 300 }}
""", gates=f"""
  gates:
    ct:
      evaluation: {{ entryPoint: evaluate }}
      metrics:
        - {{ metric: accuracy, threshold: 0.9 }}
        - {{ metric: accuracy, minAbsoluteChange: 0.0{choice} }}
"""))
    client = MlflowClient(up.url)
    first = wait_phase(up, trigger(up, name)["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    stale_champion = client.get_run(first["run_id"]).data.metrics["accuracy"]

    shutil.copy(IRIS / "samples" / "drifted.csv", data / "incoming" / "drifted.csv")
    second = wait_phase(up, trigger(up, name)["pipeline_run"]["id"], TERMINAL)
    assert second["phase"] == phase, describe(up, second["id"])
    candidate_training = client.get_run(second["run_id"]).data.metrics["accuracy"]
    assert candidate_training < stale_champion  # the stale comparison says "worse"

    detail = gate_comparisons(up, second["id"])
    change = next(c for c in detail["comparisons"] if c["check"] == "min_absolute_change")
    if against:
        assert change["basis"] == "training runs" and change["verdict"] == "fail", change
        assert (change["candidate"], change["champion"]) == (candidate_training, stale_champion)
        return
    snapshot = describe(up, second["id"])["data_snapshot"]
    assert detail["sameData"] == snapshot["id"]
    assert change["basis"] == f"same data {snapshot['id'][:16]}" and change["verdict"] == "pass", change
    assert change["champion"] < change["candidate"], change  # the old model on today's data
    tags = client.get_run(second["run_id"]).data.tags
    assert tags["ctflow.evaluation.champion_version"] == "1"
    for role in ("candidate", "champion"):
        scored = client.get_run(tags[f"ctflow.evaluation.{role}_run"])
        assert scored.data.tags["ctflow.evaluation.role"] == role
        assert scored.data.tags["ctflow.evaluation.of"] == second["run_id"]
        assert scored.data.metrics["accuracy"] == change[role]
        inputs = scored.inputs.dataset_inputs
        assert [({t.key: t.value for t in i.tags}["mlflow.data.context"], i.dataset.digest) for i in inputs] == [
            ("evaluation", snapshot["id"][:16])]
    assert champion_version(up.url, f"{name}-model") == "2"
