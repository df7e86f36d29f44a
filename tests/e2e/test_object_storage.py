"""Data on S3-compatible object storage: `data` and `drift` triggers on `s3://` prefixes are
polled, each new object triggers once, and the drift check reads the reference and the
current objects from the bucket; training data (`spec.data`) on `s3://` globs is snapshotted
by streaming the objects, and the iris project trains on exactly the objects of its manifest.
The server is moto's S3 server on loopback; boto3 writes the objects, as a data pipeline
would."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from mlflow import MlflowClient
from moto.server import ThreadedMotoServer

from support import (IRIS, CtflowUp, describe, drift_checks, free_port, install, iris_pipeline, runs_of,
                     sleeper_pipeline, sleeper_project, trigger, wait_for, wait_phase, wait_serving)

BUCKET = "ctflow-data"
TERMINAL = {"Succeeded", "GateFailed", "Rejected", "Failed", "Canceled", "Skipped"}


@pytest.fixture(scope="module")
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


@pytest.fixture(scope="module")
def s3_env(s3):
    endpoint, _ = s3
    return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": endpoint}


@pytest.fixture(scope="module")
def up(ctflow_bin, tmp_path_factory, s3_env):
    instance = CtflowUp(ctflow_bin, tmp_path_factory.mktemp("ctflow-up-s3"), env=s3_env).start()
    yield instance
    instance.stop()


def csv_body(rng, shift, n):
    x = rng.normal(shift, 1, n).round(5)
    kind = rng.choice(["a", "b"], n)
    return ("x,kind\n" + "\n".join(f"{a},{b}" for a, b in zip(x, kind)) + "\n").encode()


def test_object_prefixes_trigger_and_feed_drift_checks(up, s3, tmp_path):
    _, bucket = s3
    rng = np.random.default_rng(5)
    bucket.put_object(Bucket=BUCKET, Key="reference.csv", Body=csv_body(rng, 0.0, 2000))
    project = sleeper_project(tmp_path)
    install(up, "bucketed", sleeper_pipeline("bucketed", project, "Allow", f"""
  triggers:
    - data: {{ path: "s3://{BUCKET}/incoming/*.csv" }}
    - drift: {{ reference: "s3://{BUCKET}/reference.csv", current: "s3://{BUCKET}/incoming/*.csv",
                method: psi, threshold: 0.2, minRows: 100 }}
""", seconds=0))
    client = MlflowClient(up.url)

    def checks():
        return drift_checks(client, "bucketed")

    def of_kind(kind):
        return [r for r in runs_of(up, "bucketed") if r["trigger"]["kind"] == kind]

    bucket.put_object(Bucket=BUCKET, Key="incoming/day1.csv", Body=csv_body(rng, 0.0, 1500))
    # Neither matches the glob: another folder, another extension.
    bucket.put_object(Bucket=BUCKET, Key="elsewhere/day1.csv", Body=csv_body(rng, 0.0, 10))
    bucket.put_object(Bucket=BUCKET, Key="incoming/readme.txt", Body=b"notes")
    data_runs = wait_for("the data run", lambda: of_kind("data"), timeout=30)
    assert [r["trigger"]["files"] for r in data_runs] == [[f"s3://{BUCKET}/incoming/day1.csv"]]
    first = wait_for("the first drift check", checks, timeout=30)
    assert first[0].data.tags["ctflow.drift.dataset_drift"] == "false"
    assert first[0].data.tags["ctflow.drift.files"] == f"s3://{BUCKET}/incoming/day1.csv"

    bucket.put_object(Bucket=BUCKET, Key="incoming/day2.csv", Body=csv_body(rng, 1.5, 1500))
    drift_runs = wait_for("the drift run", lambda: of_kind("drift"), timeout=30)
    assert drift_runs[0]["trigger"]["files"] == [f"s3://{BUCKET}/incoming/day2.csv"]
    assert wait_phase(up, drift_runs[0]["id"], TERMINAL, timeout=30)["phase"] == "Succeeded"
    data_runs = wait_for("the second data run", lambda: (lambda r: r if len(r) == 2 else None)(of_kind("data")), timeout=30)
    assert sorted(f for r in data_runs for f in r["trigger"]["files"]) == [
        f"s3://{BUCKET}/incoming/day1.csv", f"s3://{BUCKET}/incoming/day2.csv"]
    check = client.get_run(describe(up, drift_runs[0]["id"])["pipeline_run"]["trigger"]["tags"]["drift.check_run"])
    assert check.data.tags["ctflow.drift.dataset_drift"] == "true"
    report = json.loads(open(client.download_artifacts(check.info.run_id, "drift_report.json", str(tmp_path))).read())
    assert report["dataset"]["drifted"] is True and report["reference_rows"] == 2000


def iris_rows(first, count):
    lines = (IRIS / "data" / "iris.csv").read_text().splitlines()
    return "\n".join([lines[0]] + lines[1 + first:1 + first + count]) + "\n"


def test_training_data_on_object_storage_is_snapshotted_and_trained_on(up, s3):
    _, bucket = s3
    base = (IRIS / "data" / "iris.csv").read_bytes()
    bucket.put_object(Bucket=BUCKET, Key="training/iris.csv", Body=base)
    # Not matched: `*` stays within one folder, and the extension differs.
    bucket.put_object(Bucket=BUCKET, Key="training/incoming/old/x.csv", Body=b"ignored")
    bucket.put_object(Bucket=BUCKET, Key="training/incoming/notes.txt", Body=b"ignored")
    install(up, "iris-s3", iris_pipeline("iris-s3", "iris-s3-model", f"""
  data:
    paths: [s3://{BUCKET}/training/iris.csv, "s3://{BUCKET}/training/incoming/*.csv"]
  triggers:
    - data: {{ path: "s3://{BUCKET}/training/incoming/*.csv" }}
"""))
    first = trigger(up, "iris-s3")["pipeline_run"]
    run = wait_phase(up, first["id"], TERMINAL)
    assert run["phase"] == "Succeeded", describe(up, first["id"])
    snapshot = describe(up, first["id"])["data_snapshot"]
    [only] = snapshot["files"]
    head = bucket.head_object(Bucket=BUCKET, Key="training/iris.csv")
    assert only["uri"] == only["path"] == f"s3://{BUCKET}/training/iris.csv"
    assert only["sha256"] == hashlib.sha256(base).hexdigest() and only["size"] == len(base)
    assert only["rows"] == 150 and only["e_tag"] == head["ETag"]
    assert snapshot["rows"] == 150 and snapshot["schema"][0]["name"] == "sepal_length"
    client = MlflowClient(up.url)
    mlflow_run = client.get_run(run["run_id"])
    assert mlflow_run.data.metrics["training_rows"] == 150
    [dataset] = mlflow_run.inputs.dataset_inputs
    assert json.loads(dataset.dataset.source)["files"] == [f"s3://{BUCKET}/training/iris.csv"]

    # A batch lands under the prefix: its run trains on the base object plus the batch.
    batch = iris_rows(50, 30).encode()
    bucket.put_object(Bucket=BUCKET, Key="training/incoming/batch1.csv", Body=batch)
    second = wait_for("the batch's run",
                      lambda: (lambda r: r[0] if len(r) == 2 else None)(runs_of(up, "iris-s3")), timeout=30)
    assert second["trigger"]["kind"] == "data"
    run = wait_phase(up, second["id"], TERMINAL)
    assert run["phase"] in ("Succeeded", "GateFailed"), describe(up, second["id"])
    snapshot = describe(up, second["id"])["data_snapshot"]
    # Oldest first, as the window reads them.
    assert [f["path"] for f in snapshot["files"]] == [
        f"s3://{BUCKET}/training/iris.csv", f"s3://{BUCKET}/training/incoming/batch1.csv"]
    assert snapshot["files"][1]["sha256"] == hashlib.sha256(batch).hexdigest()
    assert snapshot["rows"] == 180
    assert client.get_run(run["run_id"]).data.metrics["training_rows"] == 180


def test_an_object_rewritten_after_the_snapshot_fails_the_job(up, s3, s3_env):
    _, bucket = s3
    bucket.put_object(Bucket=BUCKET, Key="tampered/iris.csv", Body=(IRIS / "data" / "iris.csv").read_bytes())
    # The CI check runs after the snapshot and before training: it rewrites the object.
    rewrite = (f"import boto3; boto3.client('s3', endpoint_url='{s3_env['MLFLOW_S3_ENDPOINT_URL']}')"
               f".put_object(Bucket='{BUCKET}', Key='tampered/iris.csv', Body=b'changed')")
    install(up, "iris-s3-changed", iris_pipeline("iris-s3-changed", "iris-s3-changed-model", f"""
  data:
    paths: [s3://{BUCKET}/tampered/iris.csv]
""", gates=f"""
  gates:
    ci:
      checks:
        - name: tamper
          run: {json.dumps(f'{sys.executable} -c "{rewrite}"')}
    ct:
      metrics: [ {{ metric: accuracy, threshold: 0.9 }} ]
"""))
    started = trigger(up, "iris-s3-changed")["pipeline_run"]
    run = wait_phase(up, started["id"], TERMINAL)
    assert run["phase"] == "Failed", describe(up, started["id"])
    assert f"s3://{BUCKET}/tampered/iris.csv changed after the snapshot" in run["decision"], run["decision"]
    assert "training_rows" not in MlflowClient(up.url).get_run(run["run_id"]).data.metrics


def test_an_unreadable_object_is_a_failed_check_not_a_crash(up, s3):
    _, bucket = s3
    bucket.put_object(Bucket=BUCKET, Key="broken/reference.csv", Body=b"x\n1\n2\n3\n")
    project_pipeline = f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: broken }}
spec:
  project: {{ uri: ., envManager: local }}
  triggers:
    - drift: {{ reference: "s3://{BUCKET}/broken/reference.csv", current: "s3://{BUCKET}/broken/in/*.csv" }}
"""
    install(up, "broken", project_pipeline)
    bucket.put_object(Bucket=BUCKET, Key="broken/in/a.csv", Body=b"y\n1\n")
    client = MlflowClient(up.url)

    check = wait_for("the failed check", lambda: drift_checks(client, "broken", "FAILED"), timeout=30)[0]
    assert "only in the reference: [x]" in check.data.tags["ctflow.drift.error"]
    assert runs_of(up, "broken") == []


def test_ctflow_drift_reads_objects(ctflow_bin, s3):

    endpoint, bucket = s3
    rng = np.random.default_rng(9)
    bucket.put_object(Bucket=BUCKET, Key="cli/ref.csv", Body=csv_body(rng, 0.0, 800))
    bucket.put_object(Bucket=BUCKET, Key="cli/cur.csv", Body=csv_body(rng, 1.0, 800))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": endpoint}
    out = subprocess.run([ctflow_bin, "drift", "--reference", f"s3://{BUCKET}/cli/ref.csv", "--current",
                          f"s3://{BUCKET}/cli/cur.csv", "--output", "json"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 3, out.stderr
    assert json.loads(out.stdout)["reference_rows"] == 800
    out = subprocess.run([ctflow_bin, "drift", "--reference", f"s3://{BUCKET}/cli/missing.csv", "--current",
                          f"s3://{BUCKET}/cli/cur.csv"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and f"s3://{BUCKET}/cli/missing.csv" in out.stderr


@pytest.fixture(scope="module")
def s3_server(ctflow_bin, tmp_path_factory, s3):
    """`ctflow server` with its artifacts in the bucket; the client has no cloud credentials."""
    from support import CtflowServer
    endpoint, _ = s3
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "MLFLOW_S3_ENDPOINT_URL": endpoint}
    workdir = str(tmp_path_factory.mktemp("ctflow-s3-artifacts"))
    server = CtflowServer(ctflow_bin, f"sqlite:///{workdir}/ctflow.db", workdir,
                          artifacts=f"s3://{BUCKET}/mlartifacts", env=env)
    yield server
    server.stop()


def test_artifacts_live_in_the_bucket_and_the_server_proxies_them(s3_server, s3, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request
    _, bucket = s3
    # The client sees only the server: no credentials, no endpoint.
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"]:
        monkeypatch.delenv(key, raising=False)
    client = MlflowClient(s3_server.url)
    experiment_id = client.create_experiment("s3-artifacts")
    run = client.create_run(experiment_id)
    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))  # more than one upload part
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    client.log_artifact(run.info.run_id, str(big), "model")
    client.set_terminated(run.info.run_id)
    keys = {o["Key"]: o["Size"] for o in bucket.list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/")["Contents"]}
    prefix = f"mlartifacts/{experiment_id}/{run.info.run_id}/artifacts"
    assert keys[f"{prefix}/notes/hello.txt"] == 5
    assert keys[f"{prefix}/model/weights.bin"] == big.stat().st_size
    # The multipart upload was completed and its record removed: nothing left in progress.
    assert not any(k.startswith("mlartifacts/.ctflow-uploads/") for k in keys), keys
    assert bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    listed = {(f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id)}
    assert listed == {("notes", True), ("model", True)}
    [weights] = client.list_artifacts(run.info.run_id, "model")
    assert weights.file_size == big.stat().st_size
    out = client.download_artifacts(run.info.run_id, "model/weights.bin", str(tmp_path / "down"))
    assert Path(out).read_bytes() == big.read_bytes()
    text = client.download_artifacts(run.info.run_id, "notes/hello.txt", str(tmp_path / "text"))
    assert Path(text).read_text() == "hello"
    # Traversal is refused before anything reaches the bucket.
    url = f"{s3_server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/..%2F..%2Fescape.txt"
    request = urllib.request.Request(url, data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error_code"] == "INVALID_PARAMETER_VALUE"
    keys_after = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert not any("escape" in k for k in keys_after)
    # Deleting through the proxy removes the objects.
    delete = urllib.request.Request(
        f"{s3_server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run.info.run_id}/artifacts/notes/hello.txt",
        method="DELETE")
    with urllib.request.urlopen(delete, timeout=10) as r:
        assert r.status == 200
    remaining = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert remaining == [f"{prefix}/model/weights.bin"]


def test_the_inference_log_goes_to_object_storage_and_live_metrics_read_it(up, s3, ctflow_bin, tmp_path):
    """`promotion.serving.log.path: s3://...`: each finished file is uploaded whole (an
    object appears complete or not at all) and leaves the local spool; the monitor reads
    the objects and joins labels to them."""
    import hashlib as _hashlib
    import io
    import tempfile
    import urllib.request

    import pandas as pd

    _, bucket = s3
    destination = f"s3://{BUCKET}/inference/iris-logged"
    port = free_port()
    install(up, "iris-logged", iris_pipeline("iris-logged", "iris-logged-model", f"""
  monitoring: {{ metrics: [accuracy], window: 1h, interval: 1s }}
  promotion:
    serving: {{ port: {port}, envManager: local, log: {{ path: "{destination}", rollInterval: 1s }} }}
"""))
    first = wait_phase(up, trigger(up, "iris-logged")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    url = f"http://127.0.0.1:{port}"

    wait_serving(url)
    predictions = {}
    for i in range(6):
        body = json.dumps({"inputs": [[5.0 + i / 5, 3.0, 1.4 + i / 2, 0.2 + i / 4]]}).encode()
        request = urllib.request.Request(url + "/invocations", data=body, headers={
            "Content-Type": "application/json", "x-request-id": f"s3-{i}"})
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions[f"s3-{i}"] = json.loads(r.read())["predictions"][0]

    def uploaded():
        listed = bucket.list_objects_v2(Bucket=BUCKET, Prefix="inference/iris-logged/").get("Contents", [])
        frames = [pd.read_parquet(io.BytesIO(bucket.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()))
                  for o in listed if o["Key"].endswith(".parquet")]
        rows = pd.concat(frames).to_dict("records") if frames else []
        return rows if len(rows) == 6 else None

    rows = wait_for("the log's objects", uploaded, timeout=60)
    assert sorted(r["ctflow_request_id"] for r in rows) == sorted(predictions)
    assert {(r["ctflow_model"], r["ctflow_version"]) for r in rows} == {("iris-logged-model", "1")}
    # Uploaded files leave the local spool; nothing half-written was ever listed.
    spool = Path(tempfile.gettempdir()) / "ctflow-inference-log" / _hashlib.sha256(destination.encode()).hexdigest()[:16]
    assert spool.is_dir() and not list(spool.glob("*.parquet"))

    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(f"{rid},{int(p)}\n" for rid, p in predictions.items()))
    env = {**os.environ, "MLFLOW_TRACKING_URI": up.url}
    sent = subprocess.run([ctflow_bin, "feedback", "send", "-m", "iris-logged-model", str(labels)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    client = MlflowClient(up.url)

    def live():
        experiment = client.get_experiment_by_name("iris-logged-monitoring")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return runs[0] if runs and runs[0].data.metrics.get("live_labelled") == 6 else None

    run = wait_for("live metrics from the objects", live, timeout=60)
    assert run.data.metrics["live_accuracy"] == 1.0 and run.data.metrics["feedback_unmatched"] == 0
