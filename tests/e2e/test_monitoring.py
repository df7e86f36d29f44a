"""Monitoring in production (issue 21): the champion a pipeline serves logs every scored
row (`promotion.serving.log`), and a drift trigger on that log (`current: {served: ...}`)
compares what production sends with what the champion learned from (its training
snapshot, `reference: champion`): live inputs like the training data do not drift, shifted
ones do and retrain. The project trains on a pandas frame, so the served model has named
input columns, as the log and the comparison need."""
import json
import shutil
import urllib.request

import pandas as pd
import pytest
from mlflow import MlflowClient

from support import (IRIS, TERMINAL, CtflowUp, champion_version, describe, drift_checks, free_port, install,
                     runs_of, trigger, wait_for, wait_phase)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

TRAIN = """
import json, os
import mlflow, pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
snapshot = json.load(open(os.environ["CTFLOW_DATA_MANIFEST"]))
frame = pd.concat([pd.read_csv(f["uri"]).iloc[f.get("skip_rows", 0):] for f in snapshot["files"]])
X, y = frame[FEATURES], frame["species"].astype(int)
model = LogisticRegression(max_iter=1000).fit(X, y)
with mlflow.start_run():
    mlflow.log_metric("accuracy", model.score(X, y))
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)))
"""


@pytest.fixture(scope="module")
def up(ctflow_bin, tmp_path_factory):
    instance = CtflowUp(ctflow_bin, tmp_path_factory.mktemp("ctflow-up-monitoring")).start()
    yield instance
    instance.stop()


def frame_project(root):
    project = root / "frame-project"
    project.mkdir()
    (project / "MLproject").write_text("name: frame\nentry_points:\n  main:\n    command: python train.py\n")
    (project / "train.py").write_text(TRAIN)
    return project


def score(url, frame):
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
    request = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())["predictions"]


def test_drift_in_what_production_sends_retrains(up, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    served_dir = tmp_path / "served"
    port = free_port()
    install(up, "iris-live", f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: iris-live }}
spec:
  project: {{ uri: {frame_project(tmp_path)}, envManager: local }}
  experiment: iris-live
  model: {{ name: iris-live-model }}
  concurrencyPolicy: Enqueue
  data:
    paths: [{data}/iris.csv]
  triggers:
    - drift:
        reference: champion
        current: {{ served: iris-live }}
        minRows: 100
  gates:
    ct:
      metrics: [ {{ metric: accuracy, threshold: 0.8 }} ]
  promotion:
    serving: {{ port: {port}, envManager: local, log: {{ path: {served_dir}, rollInterval: 1s }} }}
""")
    first = wait_phase(up, trigger(up, "iris-live")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    assert champion_version(up.url, "iris-live-model") == "1"
    url = f"http://127.0.0.1:{port}"

    def serving():
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for("the champion served", serving, timeout=180)
    client = MlflowClient(up.url)
    iris = pd.read_csv(data / "iris.csv")[FEATURES]

    # Production sends rows like the training data: logged, checked, no drift.
    assert len(score(url, iris)) == len(iris)
    calm = wait_for("the check of the first live batch",
                    lambda: (lambda c: c[0] if c else None)(drift_checks(client, "iris-live")), timeout=90)
    assert calm.data.tags["ctflow.drift.dataset_drift"] == "false", calm.data.metrics
    logged = sorted(served_dir.glob("*.parquet"))
    assert calm.data.tags["ctflow.drift.files"] == str(logged[0])
    assert sum(len(pd.read_parquet(f)) for f in logged) == len(iris)

    # Then it sends shifted rows: the live inputs drift from what the champion learned.
    assert len(score(url, iris + 3.0)) == len(iris)
    shifted = wait_for("the check of the shifted batch",
                       lambda: (lambda c: c[1] if len(c) > 1 else None)(drift_checks(client, "iris-live")),
                       timeout=90)
    assert shifted.data.tags["ctflow.drift.dataset_drift"] == "true", shifted.data.metrics
    drift_runs = wait_for("the drift retrain",
                          lambda: [r for r in runs_of(up, "iris-live") if r["trigger"]["kind"] == "drift"],
                          timeout=60)
    assert drift_runs[0]["trigger"]["files"] == [str(f) for f in sorted(served_dir.glob("*.parquet"))[1:]]
    # The labels of the training data are not in what production sends; only inputs compare.
    report = json.loads(open(client.download_artifacts(shifted.info.run_id, "drift_report.json",
                                                       str(tmp_path))).read())
    assert sorted(c["column"] for c in report["columns"]) == sorted(FEATURES), report["columns"]
