"""The README's run command: `ctflow up --example iris` installs the iris pipeline, builds
its environment from python_env.yaml, trains, judges the candidate and makes it the
champion, from a fresh data folder; then serves the champion (the CD hand-off) from the
model's own environment (--env-manager virtualenv), answering as the model does."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from support import free_port, stop, wait_for

# examples/iris/pipeline.yaml: promotion.serving.port
SERVING = "http://127.0.0.1:5001"


def served():
    try:
        with urllib.request.urlopen(SERVING + "/ping", timeout=2) as r:
            return r.status == 200
    except (urllib.error.HTTPError, OSError):
        return False


def test_up_example_iris_shows_the_whole_loop(ctflow_bin, tmp_path, iris_env_cache):
    port = free_port()
    env = dict(os.environ, CTFLOW_ENV_DIR=str(iris_env_cache), CTFLOW_LOG="warn")
    proc = subprocess.Popen([ctflow_bin, "up", "--example", "iris", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Pipeline run ") or line.startswith("Serving;"):
                break
        output = "".join(lines)
        assert f"ctflow is up at http://127.0.0.1:{port}" in output, output
        summary = [l for l in lines if l.startswith("Pipeline run ")]
        assert summary and ": Succeeded - version 1 is the first champion" in summary[0], output
        client = MlflowClient(f"http://127.0.0.1:{port}")
        champion = client.get_model_version_by_alias("iris-classifier", "champion")
        assert champion.version == "1" and champion.current_stage == "Production"
        run = client.get_run(champion.run_id)
        assert run.data.metrics["accuracy"] >= 0.9
        assert run.data.tags["mlflow.project.env"] == "virtualenv"
        assert run.data.tags["ctflow.ci"] == "passed"
        assert (tmp_path / "ctflow-data" / "ctflow.db").exists()

        # The CD hand-off: the champion is served from its own virtualenv.
        wait_for("the champion served", served, timeout=600, interval=0.5)
        X, _ = load_iris(return_X_y=True)
        request = urllib.request.Request(SERVING + "/invocations", data=json.dumps({"inputs": X.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.headers["ctflow-model-version"] == "1"
            predictions = json.loads(r.read())["predictions"]
        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        expected = mlflow.pyfunc.load_model("models:/iris-classifier@champion").predict(X)
        assert predictions == expected.tolist()
    finally:
        stop(proc)
    assert proc.returncode == 0, "".join(lines) + proc.stdout.read()
