"""The model registry through the real `mlflow` client: the MLflow tracking quickstart as
written, registry flows with MlflowClient, and ctflow's promotion ledger and CLI."""
import json
import os
import subprocess
import urllib.request

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException


def test_mlflow_quickstart_as_written(client):
    """https://mlflow.org/docs/latest/getting-started/intro-quickstart: unchanged."""
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    X, y = datasets.load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    params = {"solver": "lbfgs", "max_iter": 1000, "multi_class": "auto", "random_state": 8888}
    lr = LogisticRegression(solver="lbfgs", max_iter=1000, random_state=8888)
    lr.fit(X_train, y_train)
    y_pred = lr.predict(X_test)
    accuracy = accuracy_score(y_test, y_pred)

    mlflow.set_experiment("MLflow Quickstart")
    with mlflow.start_run():
        mlflow.log_params(params)
        mlflow.log_metric("accuracy", accuracy)
        mlflow.set_tag("Training Info", "Basic LR model for iris data")
        signature = infer_signature(X_train, lr.predict(X_train))
        model_info = mlflow.sklearn.log_model(
            sk_model=lr,
            name="iris_model",
            signature=signature,
            input_example=X_train,
            registered_model_name="tracking-quickstart",
        )

    loaded_model = mlflow.pyfunc.load_model(model_info.model_uri)
    predictions = loaded_model.predict(X_test)
    assert np.array_equal(predictions, y_pred)
    result = pd.DataFrame(X_test, columns=datasets.load_iris().feature_names)
    result["actual_class"] = y_test
    result["predicted_class"] = predictions
    assert len(result) == len(y_test)

    by_version = mlflow.pyfunc.load_model("models:/tracking-quickstart/1")
    assert np.array_equal(by_version.predict(X_test), y_pred)
    client.set_registered_model_alias("tracking-quickstart", "champion", "1")
    by_alias = mlflow.pyfunc.load_model("models:/tracking-quickstart@champion")
    assert np.array_equal(by_alias.predict(X_test), y_pred)
    client.transition_model_version_stage("tracking-quickstart", "1", "Production")
    by_stage = mlflow.pyfunc.load_model("models:/tracking-quickstart/Production")
    assert np.array_equal(by_stage.predict(X_test), y_pred)
    latest = mlflow.pyfunc.load_model("models:/tracking-quickstart/latest")
    assert np.array_equal(latest.predict(X_test), y_pred)

    version = client.get_model_version("tracking-quickstart", "1")
    assert version.run_id == model_info.run_id
    assert version.status == "READY"
    logged = client.get_logged_model(model_info.model_id)
    # Byte for byte what MLflow 3.17's server and client leave there (the recorded
    # quickstart session): the server's entry, then the client's own, as a string.
    assert logged.tags["mlflow.modelVersions"] == (
        '[{"name": "tracking-quickstart", "version": 1}, {"name": "tracking-quickstart", "version": "1"}]')


def _logged_model(unique):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    mlflow.set_experiment(unique)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(LogisticRegression(max_iter=500).fit(X, y), name="model")
    return run.info.run_id, info


def test_registry_flows(client, unique):
    run_id, info = _logged_model(unique)
    name = unique + "-model"
    created = client.create_registered_model(name, tags={"owner": "e2e"}, description="first")
    assert created.name == name and created.description == "first"
    with pytest.raises(RestException) as e:
        client.create_registered_model(name)
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"

    v1 = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"v": "1"})
    v2 = client.create_model_version(name, f"models:/{info.model_id}", run_id=run_id, model_id=info.model_id)
    v3 = mlflow.register_model(f"runs:/{run_id}/model", name)
    assert [v1.version, v2.version, v3.version] == ["1", "2", "3"]
    with pytest.raises(MlflowException) as e:
        client.create_model_version(name, "file:///etc/passwd", run_id=run_id)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_registered_model(name).aliases == {"champion": "2"}
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))[0] == 0
    with pytest.raises(MlflowException) as e:
        client.get_model_version_by_alias(name, "missing")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException):
        client.set_registered_model_alias(name, "latest", "1")

    client.transition_model_version_stage(name, "2", "Production")
    client.transition_model_version_stage(name, "3", "production", archive_existing_versions=True)
    assert client.get_model_version(name, "2").current_stage == "Archived"
    assert client.get_model_version(name, "3").current_stage == "Production"
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest == {"None": "1", "Archived": "2", "Production": "3"}
    assert [v.version for v in client.get_latest_versions(name, stages=["Production"])] == ["3"]
    staged = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert staged.predict(np.array([[6.7, 3.0, 5.2, 2.3]]))[0] == 2

    client.set_model_version_tag(name, "1", "validated", "true")
    client.set_registered_model_tag(name, "task", "classification")
    found = client.search_model_versions(f"name = '{name}' and tags.validated = 'true'")
    assert [v.version for v in found] == ["1"]
    assert [v.version for v in client.search_model_versions(f"name='{name}'", order_by=["version_number ASC"])] == ["1", "2", "3"]
    assert {m.name for m in client.search_registered_models(f"name = '{name}'")} == {name}
    client.update_model_version(name, "1", description="updated")
    assert client.get_model_version(name, "1").description == "updated"
    client.update_registered_model(name, description="second")
    assert client.get_registered_model(name).description == "second"
    uri = client.get_model_version_download_uri(name, "2")
    assert uri == info.artifact_path or uri.endswith(f"/models/{info.model_id}/artifacts")

    client.delete_model_version(name, "1")
    with pytest.raises(RestException) as e:
        client.get_model_version(name, "1")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.rename_registered_model(name, name + "-renamed")
    assert client.get_registered_model(name + "-renamed").name == name + "-renamed"
    assert client.get_model_version_by_alias(name + "-renamed", "champion").version == "2"
    with pytest.raises(RestException) as e:
        client.get_registered_model(name)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model(name + "-renamed")
    with pytest.raises(RestException):
        client.get_registered_model(name + "-renamed")


def test_mlflow_ui_routes_and_source_rules(client, server, unique):
    """What MLflow 3.17's own server accepts (issue 24): version copies by alias and prompts
    through the real client, and the routes MLflow's UI calls, on SQLite and PostgreSQL."""
    import requests
    from mlflow.entities import Dataset, DatasetInput, InputTag

    run_id, info = _logged_model(unique)
    name = unique + "-copies"
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", "1")
    copy = client.copy_model_version(f"models:/{name}@champion", name + "-prod")
    assert copy.source == f"models:/{name}/1" and copy.run_id == run_id
    assert client.get_model_version(name + "-prod", "1").source == f"models:/{name}/1"
    # An object-store source needs no run; a runs:/ source must name the request's run.
    assert client.create_model_version(name, "s3://bucket/models/m").version == "2"
    with pytest.raises(MlflowException) as e:
        client.create_model_version(name, f"runs:/{run_id}/model", run_id="another")
    assert "run_id request parameter" in e.value.message
    prompt = mlflow.genai.register_prompt(unique + "-prompt", "Hello {{name}}")
    assert mlflow.genai.load_prompt(f"prompts:/{unique}-prompt/{prompt.version}").format(name="x") == "Hello x"

    base = server.url
    api = f"{base}/ajax-api/2.0/mlflow"
    for step in range(3):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), timestamp=10 + step, step=step)
    history = requests.get(f"{api}/metrics/get-history-bulk", params={"run_id": [run_id], "metric_key": "loss"}).json()
    assert [m["step"] for m in history["metrics"]] == [0, 1, 2]
    assert {m["run_id"] for m in history["metrics"]} == {run_id}

    client.log_inputs(run_id, [DatasetInput(Dataset("iris", "d1", "local", "{}"), [InputTag("mlflow.data.context", "training")])])
    experiment_id = client.get_run(run_id).info.experiment_id
    summaries = requests.post(f"{api}/experiments/search-datasets", json={"experiment_ids": [experiment_id]}).json()
    assert summaries["dataset_summaries"] == [{"experiment_id": experiment_id, "name": "iris", "digest": "d1", "context": "training"}]

    uploaded = requests.post(f"{api}/upload-artifact", params={"run_uuid": run_id, "path": "notes/hello.txt"}, data="hello world")
    assert uploaded.status_code == 200, uploaded.text
    fetched = requests.get(f"{base}/get-artifact", params={"run_uuid": run_id, "path": "notes/hello.txt"})
    assert fetched.status_code == 200 and fetched.text == "hello world"
    assert "notes/hello.txt" in [f.path for f in client.list_artifacts(run_id, "notes")]
    escaped = requests.get(f"{base}/get-artifact", params={"run_uuid": run_id, "path": "../../etc/passwd"})
    assert escaped.status_code == 400 and escaped.json()["message"] == "Invalid path"
    mlmodel = requests.get(f"{base}/model-versions/get-artifact", params={"name": name, "version": "1", "path": "MLmodel"})
    assert mlmodel.status_code == 200 and "flavors" in mlmodel.text
    listed = requests.get(f"{api}/logged-models/{info.model_id}/artifacts/directories").json()
    assert "MLmodel" in [f["path"] for f in listed["files"]]
    model_file = requests.get(f"{api}/logged-models/{info.model_id}/artifacts/files", params={"artifact_file_path": "MLmodel"})
    assert model_file.status_code == 200 and info.model_id in model_file.text

    graphql = requests.post(f"{base}/graphql", json={"query": f"""
        query run @component(name: "e2e") {{
            mlflowGetRun(input: {{runId: "{run_id}"}}) {{
                run {{ info {{ status startTime }} experiment {{ experimentId }} modelVersions {{ name version }}
                      data {{ metrics {{ key value step }} }} }}
            }}
        }}"""}).json()
    assert graphql["errors"] is None, graphql
    run = graphql["data"]["mlflowGetRun"]["run"]
    assert run["experiment"]["experimentId"] == experiment_id
    assert {"name": name, "version": "1"} in run["modelVersions"]
    assert {"key": "loss", "value": 1.0 / 3, "step": "2"} in run["data"]["metrics"]
    assert isinstance(run["info"]["startTime"], str)

    version = requests.get(f"{base}/version")
    assert version.text == "3.17.2" and version.headers["x-ctflow-version"]


def ctflow(binary, *args, uri, user="e2e-user"):
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, USER=user)
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=120)


def test_ledger_and_models_cli(ctflow_bin, server, unique, tmp_path):
    client = MlflowClient(server.url)
    mlflow.set_tracking_uri(server.url)
    run_id, info = _logged_model(unique)
    name = unique + "-ledger"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, f"models:/{info.model_id}", run_id=run_id, model_id=info.model_id)

    out = ctflow(ctflow_bin, "models", "alias", "set", name, "champion", "1", uri=server.url, user="alice")
    assert out.returncode == 0, out.stderr
    assert "now points at version 1" in out.stdout
    out = ctflow(ctflow_bin, "models", "alias", "set", name, "champion", "2", uri=server.url, user="bob")
    assert out.returncode == 0, out.stderr
    out = ctflow(ctflow_bin, "models", "stage", name, "2", "Production", "--archive-existing", uri=server.url, user="bob")
    assert out.returncode == 0 and "stage Production" in out.stdout, out.stderr

    history = ctflow(ctflow_bin, "models", "history", name, "--output", "json", uri=server.url)
    assert history.returncode == 0, history.stderr
    moves = [(e["action"], e.get("alias"), e.get("from_version"), e.get("to_version"), e["user"]) for e in json.loads(history.stdout)]
    assert ("alias_set", "champion", None, "1", "alice") in moves
    assert ("alias_set", "champion", "1", "2", "bob") in moves
    assert any(m[0] == "stage_transition" and m[3] == "2" for m in moves)
    table = ctflow(ctflow_bin, "models", "history", name, uri=server.url)
    assert "@champion: 1 -> 2" in table.stdout and "v2: None -> Production" in table.stdout
    with urllib.request.urlopen(f"{server.url}/api/ctflow/v1/models/{name}/history") as r:
        assert len(json.load(r)["entries"]) == len(moves)

    listed = ctflow(ctflow_bin, "models", "list", "--output", "json", uri=server.url)
    assert name in [m["name"] for m in json.loads(listed.stdout)]
    versions = ctflow(ctflow_bin, "models", "versions", name, uri=server.url)
    assert versions.returncode == 0 and "champion" in versions.stdout

    dest = tmp_path / "model"
    dl = ctflow(ctflow_bin, "models", "download", f"models:/{name}@champion", str(dest), uri=server.url)
    assert dl.returncode == 0, dl.stderr
    assert (dest / "MLmodel").exists()
    reloaded = mlflow.pyfunc.load_model(str(dest))
    assert reloaded.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))[0] == 0

    out = ctflow(ctflow_bin, "models", "alias", "delete", name, "champion", uri=server.url, user="carol")
    assert out.returncode == 0, out.stderr
    last = json.loads(ctflow(ctflow_bin, "models", "history", name, "--output", "json", uri=server.url).stdout)[-1]
    assert (last["action"], last["from_version"], last["user"]) == ("alias_deleted", "2", "carol")
    bad = ctflow(ctflow_bin, "models", "stage", name, "2", "Bogus", uri=server.url)
    assert bad.returncode != 0 and "INVALID_PARAMETER_VALUE" in bad.stderr
