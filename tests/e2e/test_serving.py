"""`ctflow models serve` with the real mlflow client: an iris model registered through a
ctflow server, served by alias, answering MLflow's scoring protocol in every input
format with the predictions the sklearn model gives; requests that do not fit the
signature are refused with 400 before they reach Python."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import mlflow.artifacts
import pytest
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from support import free_port, stop, wait_for


def post(url, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, text.decode()


class Served:
    def __init__(self, ctflow_bin, tracking_uri, model_uri, workdir, workers=2, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        self.log = open(os.path.join(workdir, f"serve-{self.port}.log"), "wb")
        self.proc = subprocess.Popen(
            [ctflow_bin, "models", "serve", "-m", model_uri, "--port", str(self.port), "--workers", str(workers),
             *extra],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("the model served", self._up, timeout=180, interval=0.2)

    def _up(self):
        assert self.proc.poll() is None, open(self.log.name).read()
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def iris_models(sqlite_server):
    """The quickstart's iris classifier, registered twice: with a column signature (pandas
    training data) as @champion, and with a tensor signature (numpy) as @tensor."""
    mlflow.set_tracking_uri(sqlite_server.url)
    mlflow.set_experiment("serving")
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with mlflow.start_run():
        columns = mlflow.sklearn.log_model(model, name="columns", signature=infer_signature(X, model.predict(X)),
                                           registered_model_name="serve-iris")
        tensor = mlflow.sklearn.log_model(model, name="tensor",
                                          signature=infer_signature(X.values, model.predict(X)),
                                          registered_model_name="serve-iris")
    client = mlflow.MlflowClient(sqlite_server.url)
    client.set_registered_model_alias("serve-iris", "champion", columns.registered_model_version)
    client.set_registered_model_alias("serve-iris", "tensor", tensor.registered_model_version)
    return X, model


def test_every_input_format_gets_the_sklearn_predictions(ctflow_bin, sqlite_server, iris_models, tmp_path):
    X, model = iris_models
    rows = X.iloc[[0, 60, 120, 7]]
    expected = model.predict(rows).tolist()
    served = Served(ctflow_bin, sqlite_server.url, "models:/serve-iris@champion", str(tmp_path))
    try:
        bodies = {
            "dataframe_split": {"dataframe_split": rows.to_dict(orient="split")},
            "dataframe_records": {"dataframe_records": rows.to_dict(orient="records")},
            "instances (records)": {"instances": rows.to_dict(orient="records")},
            "inputs (columns)": {"inputs": {k: list(v.values()) for k, v in rows.to_dict().items()}},
            "with params": {"dataframe_records": rows.to_dict(orient="records"), "params": {}},
        }
        for name, body in bodies.items():
            assert post(served.url, body) == (200, {"predictions": expected}), name
        assert post(served.url, rows.to_csv(index=False).encode(), "text/csv") == (200, {"predictions": expected})
        many = X.sample(150, random_state=1)
        assert post(served.url, {"dataframe_split": many.to_dict(orient="split")}) == \
            (200, {"predictions": model.predict(many).tolist()})

        # What does not fit the signature never reaches the model.
        code, body = post(served.url, {"dataframe_split": {"columns": ["a"], "data": [[1.0]]}})
        assert code == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
        assert "Model is missing inputs ['sepal length (cm)'" in body["message"], body
        code, body = post(served.url, {"dataframe_records": [dict(rows.iloc[0].to_dict(), **{"sepal length (cm)": "long"})]})
        assert code == 400 and "Can not safely convert string to float64" in body["message"], body
        code, body = post(served.url, {"rows": []})
        assert code == 400 and body["error_code"] == "BAD_REQUEST"
        assert "exactly one of the input fields" in body["message"]
        code, body = post(served.url, b"{not json")
        assert code == 400 and body["error_code"] == "BAD_REQUEST"
        code, text = post(served.url, b"x", "text/plain")
        assert code == 415 and "text/csv" in text

        for path, expected_body in (("/ping", "\n"), ("/health", "\n"), ("/version", mlflow.__version__)):
            with urllib.request.urlopen(served.url + path) as r:
                assert (r.status, r.read().decode()) == (200, expected_body)
    finally:
        served.stop()


def test_a_tensor_signature_takes_arrays_and_checks_their_shape(ctflow_bin, sqlite_server, iris_models, tmp_path):
    X, model = iris_models
    rows = X.iloc[[3, 80, 140]]
    expected = model.predict(rows).tolist()
    served = Served(ctflow_bin, sqlite_server.url, "models:/serve-iris@tensor", str(tmp_path), workers=1)
    try:
        assert post(served.url, {"inputs": rows.values.tolist()}) == (200, {"predictions": expected})
        assert post(served.url, {"instances": rows.values.tolist()}) == (200, {"predictions": expected})
        assert post(served.url, {"dataframe_split": rows.to_dict(orient="split")}) == (200, {"predictions": expected})
        code, body = post(served.url, {"inputs": [[1.0, 2.0, 3.0]]})
        assert code == 400 and "Shape of input (1, 3) does not match expected shape (-1, 4)" in body["message"], body
        code, body = post(served.url, {"inputs": [["a", "b", "c", "d"]]})
        assert code == 400 and "could not convert string to float: 'a'" in body["message"], body
        # Concurrent requests on one worker queue up and all get their own answer.
        import concurrent.futures
        batches = [X.iloc[i:i + 5] for i in range(0, 100, 5)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda b: post(served.url, {"inputs": b.values.tolist()}), batches))
        assert answers == [(200, {"predictions": model.predict(b).tolist()}) for b in batches]
    finally:
        served.stop()


def test_a_model_that_is_not_there_is_a_clear_error(ctflow_bin, sqlite_server, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=sqlite_server.url)
    done = subprocess.run([ctflow_bin, "models", "serve", "-m", "models:/no-such-model@champion",
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no-such-model" in done.stderr, done.stderr


def test_models_download_fetches_every_file_of_the_version_an_alias_names(ctflow_bin, sqlite_server, iris_models,
                                                                        tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=sqlite_server.url)
    dest = tmp_path / "downloaded"
    done = subprocess.run([ctflow_bin, "models", "download", "models:/serve-iris@champion", str(dest),
                           "--output", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    on_disk = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert report["files"] == len(on_disk) and "MLmodel" in on_disk, (report, on_disk)
    # The same files as the real client downloads (which writes a registered_model_meta
    # file of its own beside them).
    theirs = Path(mlflow.artifacts.download_artifacts(
        artifact_uri="models:/serve-iris@champion", dst_path=str(tmp_path / "mlflow"), tracking_uri=sqlite_server.url))
    assert sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*")
                  if p.is_file() and p.name != "registered_model_meta") == on_disk
    assert (dest / "MLmodel").read_bytes() == (theirs / "MLmodel").read_bytes()


def test_waiting_for_an_alias_answers_503_until_it_points_at_a_version(ctflow_bin, sqlite_server, iris_models,
                                                                         tmp_path):
    """`--wait` (the chart's Deployment, ctflow up's CD hand-off): the server listens before
    the first champion exists, holds traffic back with 503, and serves once the alias is set."""
    X, model = iris_models
    client = mlflow.MlflowClient(sqlite_server.url)
    alias = f"later{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=sqlite_server.url)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = open(tmp_path / "wait.log", "wb")
    proc = subprocess.Popen([ctflow_bin, "models", "serve", "-m", f"models:/serve-iris@{alias}", "--port", str(port),
                             "--wait", "--follow-interval", "300ms"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def ping():
        assert proc.poll() is None, open(log.name).read()
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    try:
        assert wait_for("the server listening", ping, timeout=60, interval=0.1) == 503
        status, body = post(url, {"dataframe_records": X.iloc[[0]].to_dict(orient="records")})
        assert status == 503 and body["error_code"] == "TEMPORARILY_UNAVAILABLE", body
        assert f"serve-iris@{alias}" in body["message"], body
        version = client.get_model_version_by_alias("serve-iris", "champion").version
        client.set_registered_model_alias("serve-iris", alias, version)
        wait_for("the alias served", lambda: ping() == 200, timeout=120, interval=0.2)
        status, body = post(url, {"dataframe_records": X.iloc[[0, 50, 100]].to_dict(orient="records")})
        assert status == 200 and body["predictions"] == model.predict(X.iloc[[0, 50, 100]]).tolist(), body
    finally:
        stop(proc)
        log.close()


class FailsToLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("this version cannot load")

    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


def versions_of(url):
    req = urllib.request.Request(url + "/invocations", data=b'{"inputs": {"sepal length (cm)": [1.0], '
                                 b'"sepal width (cm)": [1.0], "petal length (cm)": [1.0], "petal width (cm)": [1.0]}}',
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers["ctflow-model-version"], json.loads(r.read())["predictions"]


def test_following_the_alias_swaps_versions_without_failing_a_request(ctflow_bin, sqlite_server, iris_models,
                                                                      tmp_path):
    import threading
    from sklearn.dummy import DummyClassifier
    X, model = iris_models
    client = mlflow.MlflowClient(sqlite_server.url)
    first = client.get_model_version_by_alias("serve-iris", "champion").version
    served = Served(ctflow_bin, sqlite_server.url, "models:/serve-iris@champion", str(tmp_path), workers=2,
                    extra=["--follow-interval", "300ms"])
    results, per_thread, stopping = [], [], threading.Event()
    body = {"dataframe_records": X.iloc[[0, 1]].to_dict(orient="records")}

    def load():
        mine = []
        per_thread.append(mine)
        while not stopping.is_set():
            data = json.dumps(body).encode()
            req = urllib.request.Request(served.url + "/invocations", data=data,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    results.append((r.status, r.headers["ctflow-model-version"], json.loads(r.read())["predictions"]))
                    mine.append(results[-1][1])
            except urllib.error.HTTPError as e:
                results.append((e.code, None, e.read().decode()))
            except OSError as e:
                results.append((0, None, str(e)))

    threads = [threading.Thread(target=load) for _ in range(6)]
    try:
        assert versions_of(served.url)[0] == first
        for t in threads:
            t.start()
        # A new champion that always answers class 2.
        constant = DummyClassifier(strategy="constant", constant=2).fit(X, [2] * len(X))
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(constant, name="constant", signature=infer_signature(X, constant.predict(X)),
                                            registered_model_name="serve-iris")
        client.set_registered_model_alias("serve-iris", "champion", info.registered_model_version)
        new = info.registered_model_version
        wait_for("the new version answering", lambda: versions_of(served.url) == (new, [2]), timeout=120)
        answered = len(results)
        wait_for("more answers after the swap", lambda: len(results) >= answered + 30, timeout=60)
        # A version that cannot load: reported, and the serving one stays.
        with mlflow.start_run():
            broken = mlflow.pyfunc.log_model(name="broken", python_model=FailsToLoad(),
                                             signature=infer_signature(X, constant.predict(X)),
                                             registered_model_name="serve-iris")
        client.set_registered_model_alias("serve-iris", "champion", broken.registered_model_version)
        wait_for("the failed swap reported", lambda: 'ctflow_serving_swaps_total{result="failed"} 1' in
                 urllib.request.urlopen(served.url + "/metrics").read().decode(), timeout=120)
        answered = len(results)
        wait_for("more answers after the failed swap", lambda: len(results) >= answered + 30, timeout=60)
    finally:
        stopping.set()
        for t in threads:
            t.join(timeout=60)
        served.stop()
    failures = [r for r in results if r[0] != 200]
    assert failures == [], failures[:5]
    assert len(results) > 50
    seen = [r[1] for r in results]
    assert seen[0] == first and seen[-1] == new, (seen[0], seen[-1])
    assert set(seen) == {first, new}, set(seen)
    assert all(r[2] == [2, 2] for r in results if r[1] == new)
    assert all(r[2] == model.predict(X.iloc[[0, 1]]).tolist() for r in results if r[1] == first)
    # Once a client got the new version, it never gets the old one again.
    for versions in per_thread:
        if new in versions:
            assert all(v == new for v in versions[versions.index(new):]), versions


def post_with_id(url, body, request_id=None):
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    req = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers["x-request-id"], json.loads(r.read())["predictions"]


def test_the_inference_log_records_every_scored_row_as_parquet(ctflow_bin, sqlite_server, iris_models, tmp_path):
    # Version 1 by number: earlier tests of this module move @champion.
    import pandas as pd
    X, model = iris_models
    log_dir = tmp_path / "inference-log"
    served = Served(ctflow_bin, sqlite_server.url, "models:/serve-iris/1", str(tmp_path), workers=1,
                    extra=["--log", str(log_dir)])
    try:
        mine, predictions = post_with_id(served.url, {"dataframe_split": X.head(3).to_dict(orient="split")},
                                         request_id="client-42")
        assert mine == "client-42" and predictions == model.predict(X.head(3)).tolist()
        made, _ = post_with_id(served.url, {"dataframe_records": X.iloc[3:5].to_dict(orient="records")})
        assert len(made) == 32 and made != mine
        # A refused request is answered with an id, and not logged: nothing was scored.
        status, _ = post(served.url, {"dataframe_records": [{"nope": 1}]})
        assert status == 400
        # Nothing is visible while the file is open: readers see only finished files.
        assert list(log_dir.glob("*.parquet")) == []
    finally:
        served.stop()
    [finished] = list(log_dir.glob("*.parquet"))
    assert not [p for p in log_dir.iterdir() if p.name.startswith(".")]
    rows = pd.read_parquet(finished)
    assert len(rows) == 5
    assert rows["ctflow_request_id"].tolist() == ["client-42"] * 3 + [made] * 2
    assert set(rows["ctflow_model"]) == {"serve-iris"} and set(rows["ctflow_version"]) == {"1"}
    assert rows["ctflow_prediction"].tolist() == model.predict(X.head(5)).tolist()
    assert list(rows.columns[6:]) == list(X.columns)
    assert rows[list(X.columns)].values.tolist() == X.head(5).values.tolist()
    assert (rows["ctflow_latency_ms"] > 0).all()
    assert str(rows["ctflow_timestamp"].dtype).startswith("datetime64")


def test_the_inference_log_survives_kill_9_without_a_half_written_file(ctflow_bin, sqlite_server, iris_models,
                                                                      tmp_path):
    import signal
    import pandas as pd
    X, _ = iris_models
    log_dir = tmp_path / "inference-log"
    served = Served(ctflow_bin, sqlite_server.url, "models:/serve-iris/1", str(tmp_path), workers=1,
                    extra=["--log", str(log_dir), "--log-roll-rows", "4"])
    body = {"dataframe_records": X.head(1).to_dict(orient="records")}
    for i in range(10):
        post_with_id(served.url, body, request_id=f"r{i}")
    # Rows 1-8 are in two finished files; rows 9-10 are in the open one when the process dies.
    wait_for("two finished files", lambda: len(list(log_dir.glob("*.parquet"))) == 2, timeout=30)
    os.killpg(served.proc.pid, signal.SIGKILL)
    served.proc.wait()
    served.log.close()
    finished = sorted(log_dir.glob("*.parquet"))
    ids = [i for f in finished for i in pd.read_parquet(f)["ctflow_request_id"]]
    assert ids == [f"r{i}" for i in range(8)]
    # The open file was hidden and is removed by the next server on the folder.
    assert [p.name for p in log_dir.iterdir() if p.name.endswith(".parquet.writing")]
    again = Served(ctflow_bin, sqlite_server.url, "models:/serve-iris/1", str(tmp_path), workers=1,
                   extra=["--log", str(log_dir)])
    again.stop()
    assert not [p for p in log_dir.iterdir() if p.name.startswith(".")]
    assert sorted(log_dir.glob("*.parquet")) == finished
