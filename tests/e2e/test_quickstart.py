"""The README's run command: `ctflow up --example iris` installs the iris pipeline, builds
its environment from python_env.yaml, trains, judges the candidate and makes it the
champion, from a fresh data folder."""
import os
import subprocess
import time

from mlflow import MlflowClient

from conftest import free_port, stop


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
            if line.startswith("Pipeline run ") or line.startswith("Serving"):
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
    finally:
        stop(proc)
    assert proc.returncode == 0, "".join(lines) + proc.stdout.read()
