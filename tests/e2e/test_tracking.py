"""The real `mlflow` Python client (pinned 3.17.x) against ctflow servers on SQLite and
PostgreSQL: every call below is the client's own, unchanged."""
import os

import mlflow
import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException, RestException


def error_code(exc):
    return getattr(exc, "error_code", None)


def test_tracking_session(client, unique, tmp_path):
    exp_id = mlflow.set_experiment(unique).experiment_id
    assert client.get_experiment_by_name(unique).experiment_id == exp_id

    with mlflow.start_run(run_name="first") as run:
        mlflow.log_params({"C": 0.05, "solver": "lbfgs", "max_iter": 1000})
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metric("accuracy", 0.93)
        mlflow.set_tag("stage", "test")
        mlflow.log_metrics({"a": 1.0, "b": 2.0}, step=7)
        notes = tmp_path / "notes.txt"
        notes.write_text("hello artifact\n")
        mlflow.log_artifact(str(notes))
        plots = tmp_path / "plots"
        (plots / "sub").mkdir(parents=True)
        (plots / "a.csv").write_text("x,y\n1,2\n")
        (plots / "sub" / "c.bin").write_bytes(os.urandom(2048))
        mlflow.log_artifacts(str(plots), "plots")
        mlflow.log_text("some text", "texts/t.txt")
        mlflow.log_dict({"k": 1}, "dicts/d.json")
    run_id = run.info.run_id

    fetched = client.get_run(run_id)
    assert fetched.info.status == "FINISHED"
    assert fetched.info.run_name == "first"
    assert fetched.data.params == {"C": "0.05", "solver": "lbfgs", "max_iter": "1000"}
    assert fetched.data.metrics["loss"] == pytest.approx(1.0 / 20)
    assert fetched.data.metrics["accuracy"] == pytest.approx(0.93)
    assert fetched.data.tags["stage"] == "test"
    assert fetched.data.tags["mlflow.runName"] == "first"

    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(20))
    assert [m.value for m in history] == pytest.approx([1.0 / (s + 1) for s in range(20)])

    top = {f.path: f for f in client.list_artifacts(run_id)}
    assert set(top) == {"notes.txt", "plots", "texts", "dicts"}
    assert top["notes.txt"].file_size == len("hello artifact\n") and not top["notes.txt"].is_dir
    assert top["plots"].is_dir
    assert {f.path for f in client.list_artifacts(run_id, "plots")} == {"plots/a.csv", "plots/sub"}

    dest = tmp_path / "download"
    dest.mkdir()
    local = client.download_artifacts(run_id, "plots", str(dest))
    assert (open(os.path.join(local, "a.csv")).read()) == "x,y\n1,2\n"
    assert (open(os.path.join(local, "sub", "c.bin"), "rb").read()) == (plots / "sub" / "c.bin").read_bytes()
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/texts/t.txt") == "some text"
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/dicts/d.json") == {"k": 1}


def test_large_artifact_and_many_metrics(client, unique, tmp_path):
    mlflow.set_experiment(unique)
    big = tmp_path / "big.bin"
    payload = os.urandom(5 * 1024 * 1024)
    big.write_bytes(payload)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(big))
        client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric("m", float(i), 1000 + i, i) for i in range(1500)])
    out = client.download_artifacts(run.info.run_id, "big.bin", str(tmp_path / "dl"))
    assert open(out, "rb").read() == payload
    assert len(client.get_metric_history(run.info.run_id, "m")) == 1500


def test_search_runs_filters_and_order(client, unique):
    exp_id = client.create_experiment(unique)
    for i, (c, acc) in enumerate([("0.05", 0.9), ("1.0", 0.7), ("0.05", 0.4), ("0.5", 0.95)]):
        r = client.create_run(exp_id, run_name=f"r{i}", tags={"group": "even" if i % 2 == 0 else "odd"})
        client.log_param(r.info.run_id, "C", c)
        client.log_metric(r.info.run_id, "accuracy", acc)
        client.set_terminated(r.info.run_id)

    def names(filter_string="", order_by=None, **kw):
        runs = client.search_runs([exp_id], filter_string, order_by=order_by or ["attributes.run_name ASC"], **kw)
        return [r.info.run_name for r in runs]

    assert names("metrics.accuracy > 0.5 and params.C = '0.05'") == ["r0"]
    assert names("tags.group = 'even'") == ["r0", "r2"]
    assert names("tags.`mlflow.runName` ILIKE 'R1'") == ["r1"]
    assert names("params.C LIKE '0.%'") == ["r0", "r2", "r3"]
    assert names("params.C != '0.05'") == ["r1", "r3"]
    assert names("tags.group IS NULL") == []
    assert names("attributes.status = 'FINISHED'") == ["r0", "r1", "r2", "r3"]
    assert names(order_by=["metrics.accuracy DESC"]) == ["r3", "r0", "r1", "r2"]

    df = mlflow.search_runs(experiment_names=[unique], filter_string="metrics.accuracy > 0.5", order_by=["metrics.accuracy DESC"])
    assert list(df["tags.mlflow.runName"]) == ["r3", "r0", "r1"]

    page1 = client.search_runs([exp_id], order_by=["metrics.accuracy DESC"], max_results=2)
    assert [r.info.run_name for r in page1] == ["r3", "r0"] and page1.token
    page2 = client.search_runs([exp_id], order_by=["metrics.accuracy DESC"], max_results=2, page_token=page1.token)
    assert [r.info.run_name for r in page2] == ["r1", "r2"]

    with pytest.raises(MlflowException) as e:
        client.search_runs([exp_id], "metrics.accuracy > 0.5 OR params.C = '1'")
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"


def test_experiments_search_delete_restore_rename(client, unique):
    exp_id = client.create_experiment(unique, tags={"team": "ml"})
    found = client.search_experiments(filter_string=f"name = '{unique}'")
    assert [e.experiment_id for e in found] == [exp_id]
    assert found[0].tags == {"team": "ml"}
    assert any(e.name == "Default" for e in client.search_experiments())

    run = client.create_run(exp_id)
    client.delete_run(run.info.run_id)
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    assert [r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)] == [run.info.run_id]
    client.restore_run(run.info.run_id)
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [run.info.run_id]

    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert unique not in [e.name for e in client.search_experiments()]
    assert unique in [e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    client.restore_experiment(exp_id)
    client.rename_experiment(exp_id, unique + "-renamed")
    assert client.get_experiment(exp_id).name == unique + "-renamed"
    assert client.get_experiment_by_name(unique) is None


def test_error_cases_use_mlflow_codes(client, unique):
    with pytest.raises(RestException) as e:
        client.get_run("0" * 32)
    assert error_code(e.value) == "RESOURCE_DOES_NOT_EXIST"

    client.create_experiment(unique)
    with pytest.raises(RestException) as e:
        client.create_experiment(unique)
    assert error_code(e.value) == "RESOURCE_ALREADY_EXISTS"

    run = client.create_run(client.get_experiment_by_name(unique).experiment_id)
    client.log_param(run.info.run_id, "a", "1")
    client.log_param(run.info.run_id, "a", "1")
    with pytest.raises(MlflowException) as e:
        client.log_param(run.info.run_id, "a", "2")
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in str(e.value)

    with pytest.raises(RestException) as e:
        client.log_metric(run.info.run_id, "bad key!", 1.0)
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"

    client.log_metric(run.info.run_id, "nan", float("nan"))
    client.log_metric(run.info.run_id, "inf", float("inf"))
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["nan"] != metrics["nan"]
    assert metrics["inf"] == 1.7976931348623157e308
    # As MLflow's SQL store: a NaN satisfies `!=` and no other comparison.
    experiment_ids = [run.info.experiment_id]
    assert run.info.run_id in [r.info.run_id for r in client.search_runs(experiment_ids, "metrics.nan != 1")]
    assert run.info.run_id not in [r.info.run_id for r in client.search_runs(experiment_ids, "metrics.nan < 1")]

    with pytest.raises(RestException) as e:
        client.delete_tag(run.info.run_id, "missing")
    assert error_code(e.value) == "RESOURCE_DOES_NOT_EXIST"

    client.delete_run(run.info.run_id)
    with pytest.raises(RestException) as e:
        client.log_metric(run.info.run_id, "x", 1.0)
    assert error_code(e.value) == "INVALID_PARAMETER_VALUE"


def test_logged_model_round_trip(client, unique):
    """MLflow 3's log_model path: logged model, artifacts under it, and loading it back."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    mlflow.set_experiment(unique)
    with mlflow.start_run() as run:
        mlflow.log_param("max_iter", 500)
        mlflow.log_metric("accuracy", float(model.score(X, y)))
        info = mlflow.sklearn.log_model(model, name="iris_model", input_example=X[:3])
    assert info.model_uri.startswith("models:/m-")
    logged = client.get_logged_model(info.model_id)
    assert logged.status.name == "READY" or str(logged.status).endswith("READY")
    assert logged.source_run_id == run.info.run_id
    assert "accuracy" in {m.key for m in logged.metrics}
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert [m.model_id for m in client.search_logged_models([run.info.experiment_id])] == [info.model_id]
    assert client.get_run(run.info.run_id).outputs.model_outputs[0].model_id == info.model_id
