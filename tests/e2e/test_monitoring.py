"""Monitoring in production (issue 21): the champion a pipeline serves logs every scored
row (`promotion.serving.log`), and a drift trigger on that log (`current: {served: ...}`)
compares what production sends with what the champion learned from (its training
snapshot, `reference: champion`): live inputs like the training data do not drift, shifted
ones do and retrain. The project trains on a pandas frame, so the served model has named
input columns, as the log and the comparison need."""
import json
import os
import shutil
import subprocess
import urllib.request

import pandas as pd
import pytest
from mlflow import MlflowClient

from support import (IRIS, TERMINAL, CtflowUp, api, champion_version, describe, drift_checks, free_port, install,
                     runs_of, trigger, wait_for, wait_phase, wait_serving)

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
    cd:
      shadow: {{ requests: 20, minAgreement: 0.9, timeout: 3m }}
  promotion:
    serving: {{ port: {port}, envManager: local, log: {{ path: {served_dir}, rollInterval: 1s }} }}
""")
    first = wait_phase(up, trigger(up, "iris-live")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    assert champion_version(up.url, "iris-live-model") == "1"
    url = f"http://127.0.0.1:{port}"

    wait_serving(url)
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

    # The retrain passes CT, then proves itself on live traffic beside the champion before
    # it is promoted: production goes on sending rows while it shadows.
    with LoadGenerator(url, iris) as load:
        done = wait_phase(up, drift_runs[0]["id"], TERMINAL)
    assert done["phase"] == "Succeeded", describe(up, done["id"])
    assert "Evaluating -> Shadowing" in [e["message"] for e in describe(up, done["id"])["events"]]
    assert shadow_gate_event(up, done["id"])["detail"]["shadow"]["summary"]["agreement"] == 1.0
    assert champion_version(up.url, "iris-live-model") == "2"
    assert not load.failures, load.failures[:3]


def metric_history(client, run_id, key):
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def send_feedback(ctflow_bin, up, model, path):
    out = subprocess.run([ctflow_bin, "feedback", "send", "-m", model, str(path), "--output", "json"],
                         env=dict(os.environ, MLFLOW_TRACKING_URI=up.url), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_wrong_labels_lower_live_accuracy_and_retrain(up, tmp_path, ctflow_bin):
    """Ground truth comes back: labels sent with `ctflow feedback send` are joined to the
    logged predictions by request id, live accuracy per served version is logged on a
    monitoring run and exported on /metrics, and when it falls under the performance
    trigger's threshold the pipeline retrains."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    served_dir = tmp_path / "served"
    port = free_port()
    model = "iris-feedback-model"
    install(up, "iris-feedback", f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: iris-feedback }}
spec:
  project: {{ uri: {frame_project(tmp_path)}, envManager: local }}
  experiment: iris-feedback
  model: {{ name: {model} }}
  concurrencyPolicy: Enqueue
  data:
    paths: [{data}/iris.csv]
  triggers:
    - performance: {{ metric: accuracy, below: 0.9, window: 1h, minLabels: 20 }}
  monitoring: {{ metrics: [accuracy, f1], window: 1h, interval: 1s }}
  gates:
    ct:
      metrics: [ {{ metric: accuracy, threshold: 0.8 }} ]
  promotion:
    serving: {{ port: {port}, envManager: local, log: {{ path: {served_dir}, rollInterval: 1s }} }}
""")
    first = wait_phase(up, trigger(up, "iris-feedback")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    url = f"http://127.0.0.1:{port}"

    wait_serving(url)

    # Traffic: 30 single-row requests with the client's own ids, one request of two rows.
    iris = pd.read_csv(data / "iris.csv")[FEATURES].iloc[::4].reset_index(drop=True)
    predictions = {}
    for i in range(30):
        frame = iris.iloc[[i]]
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
        request = urllib.request.Request(url + "/invocations", data=body, headers={
            "Content-Type": "application/json", "x-request-id": f"fb-{i}"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.headers["x-request-id"] == f"fb-{i}"
            assert r.headers["ctflow-model-version"] == "1"
            predictions[(f"fb-{i}", 0)] = json.loads(r.read())["predictions"][0]
    body = json.dumps({"dataframe_split": iris.iloc[[30, 31]].to_dict(orient="split")}).encode()
    request = urllib.request.Request(url + "/invocations", data=body, headers={
        "Content-Type": "application/json", "x-request-id": "fb-pair"})
    with urllib.request.urlopen(request, timeout=60) as r:
        pair = json.loads(r.read())["predictions"]
    predictions[("fb-pair", 0)], predictions[("fb-pair", 1)] = pair
    wait_for("every scored row in finished log files",
             lambda: sum(len(pd.read_parquet(f)) for f in served_dir.glob("*.parquet")) == 32, timeout=60)

    # The true labels, plus two for requests nobody made.
    right = tmp_path / "right.csv"
    right.write_text("request_id,row,label\n" + "".join(f"{rid},{row},{p}\n" for (rid, row), p in predictions.items())
                     + "fb-unknown-1,0,1\nfb-unknown-2,0,2\n")
    assert send_feedback(ctflow_bin, up, model, right) == {
        "model": model, "sent": 34, "stored": 34, "unchanged": 0, "replaced": 0}
    client = MlflowClient(up.url)

    def monitoring_run():
        runs = client.search_runs([client.get_experiment_by_name("iris-feedback-monitoring").experiment_id],
                                  "tags.`ctflow.monitoring.version` = '1'") \
            if client.get_experiment_by_name("iris-feedback-monitoring") else []
        return runs[0] if runs and runs[0].data.metrics.get("live_labelled") == 32 else None

    live = wait_for("live metrics of version 1", monitoring_run, timeout=60)
    assert live.data.metrics["live_accuracy"] == 1.0 and live.data.metrics["live_f1"] == 1.0, live.data.metrics
    assert live.data.metrics["live_predictions"] == 32 and live.data.metrics["feedback_unmatched"] == 2
    # Traffic and latency come from the log: 31 requests (one of two rows).
    assert live.data.metrics["live_requests"] == 31
    assert 0 < live.data.metrics["live_latency_p50_ms"] <= live.data.metrics["live_latency_p99_ms"]
    assert live.data.tags["ctflow.monitoring.model"] == model
    exposition = urllib.request.urlopen(up.url + "/metrics", timeout=10).read().decode()
    assert 'ctflow_live_metric{pipeline="iris-feedback",version="1",metric="accuracy"} 1.0' in exposition
    assert 'ctflow_feedback_unmatched_labels{pipeline="iris-feedback"} 2' in exposition
    # Sending the same labels again changes nothing (the README's command, as a person runs it).
    again = subprocess.run([ctflow_bin, "feedback", "send", "-m", model, str(right)],
                           env=dict(os.environ, MLFLOW_TRACKING_URI=up.url), capture_output=True, text=True,
                           timeout=60)
    assert again.stdout == f"34 labels for {model}: 0 new, 34 unchanged, 0 replaced\n", again.stderr
    # A label for a request that is no request id at all is refused, with its line; nothing is sent.
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,label\nfb-0,2\nfb 1,0\n")
    refused = subprocess.run([ctflow_bin, "feedback", "send", "-m", model, str(bad)],
                             env=dict(os.environ, MLFLOW_TRACKING_URI=up.url), capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "line 3: request_id" in refused.stderr, refused.stderr
    assert not [r for r in runs_of(up, "iris-feedback") if r["trigger"]["kind"] == "performance"]

    # Then the world disagrees with every prediction: live accuracy falls, the pipeline retrains.
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("request_id,row,label\n" + "".join(f"{rid},{row},{(int(p) + 1) % 3}\n"
                                                         for (rid, row), p in predictions.items()))
    assert send_feedback(ctflow_bin, up, model, wrong)["replaced"] == 32
    retrain = wait_for("the performance retrain",
                       lambda: [r for r in runs_of(up, "iris-feedback") if r["trigger"]["kind"] == "performance"],
                       timeout=60)
    assert len(retrain) == 1, retrain
    detail = retrain[0]["trigger"]["detail"]
    assert (detail["metric"], detail["value"], detail["version"], detail["labels"], detail["below"]) == \
        ("accuracy", 0.0, "1", 32, 0.9), detail
    assert retrain[0]["trigger"]["tags"]["performance.monitoring_run"] == live.info.run_id
    assert metric_history(client, live.info.run_id, "live_accuracy")[-1] == 0.0
    # The retrain learns, is judged and promoted like any other run.
    done = wait_phase(up, retrain[0]["id"], TERMINAL)
    assert done["phase"] == "Succeeded", describe(up, done["id"])
    assert champion_version(up.url, model) == "2"


SHADOW_TRAIN = TRAIN.replace(
    'X, y = frame[FEATURES], frame["species"].astype(int)',
    'X, y = frame[FEATURES], (frame["species"].astype(int) + int(float(os.environ["FLIP"]))) % 3')


def shadow_project(root):
    """The frame project with a `flip` parameter: flip=1 learns every class shifted by one,
    a model as accurate on its own labels as the champion but disagreeing with it."""
    project = root / "shadow-project"
    project.mkdir()
    (project / "MLproject").write_text(
        "name: shadow\nentry_points:\n  main:\n    parameters:\n      flip: {type: float, default: 0}\n"
        "    command: \"FLIP={flip} python train.py\"\n")
    (project / "train.py").write_text(SHADOW_TRAIN)
    return project


class LoadGenerator:
    """Single-row requests to the served model, one after another, until stopped; keeps
    the version that answered each."""

    def __init__(self, url, frame):
        import threading
        self.url, self.frame = url, frame
        self.versions, self.failures = [], []
        self.answers = {}  # request id (the server's) -> the prediction
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.done.is_set():
            row = self.frame.iloc[[i % len(self.frame)]]
            body = json.dumps({"dataframe_split": row.to_dict(orient="split")}).encode()
            request = urllib.request.Request(self.url + "/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    self.versions.append(r.headers["ctflow-model-version"])
                    self.answers[r.headers["x-request-id"]] = json.loads(r.read())["predictions"][0]
            except Exception as error:  # noqa: BLE001 - a failed request is what the test checks
                self.failures.append(repr(error))
            i += 1
            self.done.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=30)


def shadow_gate_event(up, run_id):
    events = describe(up, run_id)["events"]
    return [e for e in events if e.get("gate") == "cd" and e.get("result") != "waiting"
            and "shadow" in e.get("detail", {})][-1]


def dashboard_text(url, hash_path, selectors):
    """The text of `selectors` on a dashboard page, in a real headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/#{hash_path}")
            page.wait_for_selector(f'body[data-ready="{hash_path}"]')
            return {selector: page.inner_text(selector) for selector in selectors}
        finally:
            browser.close()


def test_a_challenger_proves_itself_on_mirrored_traffic(up, tmp_path):
    """The shadow gate: after CT passes, the challenger answers a copy of the champion's live
    traffic (the champion alone answers callers); one that agrees is promoted with the
    numbers recorded, one that disagrees fails the CD gate with them."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    port = free_port()
    model = "iris-shadow-model"
    install(up, "iris-shadow", f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: iris-shadow }}
spec:
  project: {{ uri: {shadow_project(tmp_path)}, envManager: local }}
  experiment: iris-shadow
  model: {{ name: {model} }}
  concurrencyPolicy: Enqueue
  data:
    paths: [{data}/iris.csv]
  gates:
    ct:
      metrics: [ {{ metric: accuracy, threshold: 0.8 }} ]
    cd:
      shadow: {{ requests: 30, minAgreement: 0.9, maxLatencyRatio: 20, maxErrors: 0, timeout: 3m }}
  promotion:
    serving: {{ port: {port}, envManager: local }}
""")
    first = wait_phase(up, trigger(up, "iris-shadow")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    assert "shadow" not in first, "no champion yet: nothing to shadow"
    url = f"http://127.0.0.1:{port}"
    wait_serving(url)
    iris = pd.read_csv(data / "iris.csv")[FEATURES]

    with LoadGenerator(url, iris) as load:
        # The same data again: a challenger that agrees with the champion on every row.
        agreeing = trigger(up, "iris-shadow", key="agreeing")["pipeline_run"]["id"]
        done = wait_phase(up, agreeing, TERMINAL)
        assert done["phase"] == "Succeeded", describe(up, agreeing)
        history = [e["message"] for e in describe(up, agreeing)["events"]]
        assert "Evaluating -> Shadowing" in history, "\n".join(history)
        assert "Shadowing -> Succeeded: version 2 is the champion (was version 1)" in history, "\n".join(history)
        event = shadow_gate_event(up, agreeing)
        summary = event["detail"]["shadow"]["summary"]
        assert event["result"] == "pass" and summary["requests"] >= 30, event
        assert summary["agreement"] == 1.0 and summary["errors"] == 0, summary
        assert summary["latency_ratio"] > 0, summary
        assert done["shadow"]["champion"] == 1 and len(done["shadow"]["replicas"]) == 1, done["shadow"]
        assert champion_version(up.url, model) == "2"
        # Every caller was answered by the champion of the moment, never by the shadow.
        assert not load.failures, load.failures[:3]
        assert set(load.versions) <= {"1", "2"}, set(load.versions)
        wait_for("the new champion to serve", lambda: load.versions and load.versions[-1] == "2", timeout=60)
        shadowed_answers = len(load.versions)

        # flip=1: as accurate on its own labels, so CT passes, but it disagrees on every row.
        disagreeing = trigger(up, "iris-shadow", params={"flip": "1"}, key="disagreeing")["pipeline_run"]["id"]
        done = wait_phase(up, disagreeing, TERMINAL)
        assert done["phase"] == "GateFailed", describe(up, disagreeing)
        assert done["decision"].startswith("CD gate: shadow failed: agreement "), done["decision"]
        assert "needs >= 90.0%" in done["decision"], done["decision"]
        event = shadow_gate_event(up, disagreeing)
        checks = {c["criterion"]: c for c in event["detail"]["shadow"]["checks"]}
        assert checks["agreement"]["verdict"] == "fail" and checks["agreement"]["value"] < 0.1, checks
        assert checks["errors"]["verdict"] == "pass", checks
        assert champion_version(up.url, model) == "2", "a failed shadow never moves the champion"
        assert len(load.versions) > shadowed_answers and not load.failures, load.failures[:3]
        assert set(load.versions[shadowed_answers:]) <= {"2"}

    # The numbers are on the pipeline run's page, as the gate judged them.
    shown = dashboard_text(up.url, f"/pipeline-runs/{disagreeing}", ["#shadow-agreement", "#shadow-requests", "#gates"])
    assert "needs ≥ 90.0%" in shown["#shadow-agreement"], shown
    assert "of 30" in shown["#shadow-requests"], shown
    assert "agreement:" in shown["#gates"] and "shadow failed" in shown["#gates"], shown

    # The scoring server counted what it mirrored.
    exposition = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    assert 'ctflow_serving_shadow_copies_total{result="compared"}' in exposition, exposition
    assert 'ctflow_serving_shadow_rows_total{result="disagreed"}' in exposition


def test_labels_for_mirrored_requests_judge_both_models_live(up, tmp_path):
    """The shadow gate's live metrics: labels sent for requests while the challenger
    shadows score both models on the same rows. Here the world agrees with the challenger
    and not with the champion, so the challenger is promoted though it disagrees with the
    champion on every row."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    port = free_port()
    model = "iris-shadow-live-model"
    install(up, "iris-shadow-live", f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: iris-shadow-live }}
spec:
  project: {{ uri: {shadow_project(tmp_path)}, envManager: local }}
  experiment: iris-shadow-live
  model: {{ name: {model} }}
  concurrencyPolicy: Enqueue
  data:
    paths: [{data}/iris.csv]
  gates:
    ct:
      metrics: [ {{ metric: accuracy, threshold: 0.8 }} ]
    cd:
      shadow:
        requests: 10
        timeout: 3m
        metrics: [ {{ metric: accuracy, minLabels: 20, maxDrop: 0.0 }} ]
  promotion:
    serving: {{ port: {port}, envManager: local }}
""")
    first = wait_phase(up, trigger(up, "iris-shadow-live")["pipeline_run"]["id"], TERMINAL)
    assert first["phase"] == "Succeeded", describe(up, first["id"])
    url = f"http://127.0.0.1:{port}"
    wait_serving(url)
    iris = pd.read_csv(data / "iris.csv")[FEATURES]

    with LoadGenerator(url, iris) as load:
        flipped = trigger(up, "iris-shadow-live", params={"flip": "1"}, key="flipped")["pipeline_run"]["id"]
        wait_phase(up, flipped, {"Shadowing"} | TERMINAL)

        def labelled_until_decided():
            # The truth is one class on from what the champion said: the champion is wrong
            # on every row, the flipped challenger right.
            labels = [{"request_id": rid, "row": 0, "label": (int(p) + 1) % 3}
                      for rid, p in list(load.answers.items())]
            status, body = api(up.url, f"/api/ctflow/v1/models/{model}/feedback", {"labels": labels[-10000:]})
            assert status == 200, body
            run = describe(up, flipped)["pipeline_run"]
            return run if run["phase"] in TERMINAL else None

        done = wait_for("the shadow's live verdict", labelled_until_decided, timeout=180, interval=1)
    assert done["phase"] == "Succeeded", describe(up, flipped)
    event = shadow_gate_event(up, flipped)
    live = {c["metric"]: c for c in event["detail"]["shadow"]["live"]}["accuracy"]
    assert live["labelled"] >= 20 and live["challenger"] == 1.0 and live["champion"] == 0.0, live
    checks = {c["criterion"]: c for c in event["detail"]["shadow"]["checks"]}
    assert checks["live_accuracy"]["verdict"] == "pass", checks
    assert event["detail"]["shadow"]["summary"]["agreement"] < 0.1
    assert champion_version(up.url, model) == "2"
    assert not load.failures, load.failures[:3]
