"""`ctflow run` (and the real `mlflow run`) on MLflow projects, with the run tracked on a
ctflow server or on the real MLflow server."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "iris"


def env_for(url):
    venv_bin = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                                                           "MLFLOW_RUN_ID")}
    return dict(env, MLFLOW_TRACKING_URI=url, PATH=f"{venv_bin}:{os.environ['PATH']}")


def ctflow_run(binary, url, *args, timeout=300):
    return subprocess.run([binary, "run", *args, "--output", "json"], env=env_for(url), capture_output=True, text=True, timeout=timeout)


def check_iris_run(client, run_id, c="0.05"):
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == c
    assert run.data.metrics["accuracy"] > 0.8
    assert run.data.tags["mlflow.source.type"] == "PROJECT"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.outputs.model_outputs, "the training script logged a model"
    return run


def test_ctflow_run_iris_on_ctflow(ctflow_bin, sqlite_server, unique):
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(IRIS), "-P", "C=0.05", "--env-manager", "local", "--experiment-name", unique)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "FINISHED" and result["exit_code"] == 0
    client = MlflowClient(sqlite_server.url)
    run = check_iris_run(client, result["run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name(unique).experiment_id
    log = client.download_artifacts(result["run_id"], "ctflow-run.log")
    assert "accuracy=" in open(log).read()


def test_real_mlflow_run_on_ctflow(sqlite_server, unique):
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    out = subprocess.run(
        [mlflow_cli, "run", str(IRIS), "-P", "C=0.05", "--env-manager", "local", "--experiment-name", unique],
        env=env_for(sqlite_server.url), capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(sqlite_server.url)
    exp = client.get_experiment_by_name(unique)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    check_iris_run(client, runs[0].info.run_id)


def test_ctflow_run_on_the_real_mlflow_server(ctflow_bin, mlflow_server, unique):
    out = ctflow_run(ctflow_bin, mlflow_server, str(IRIS), "-P", "C=0.5", "--experiment-name", unique)
    assert out.returncode == 0, out.stderr[-3000:]
    check_iris_run(MlflowClient(mlflow_server), json.loads(out.stdout)["run_id"], c="0.5")


def test_bad_parameters_fail_before_any_run(ctflow_bin, sqlite_server, unique):
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(IRIS), "-P", "C=abc", "--experiment-name", unique)
    assert out.returncode != 0
    assert "parameter 'C' must be a float, got 'abc'" in out.stderr
    assert MlflowClient(sqlite_server.url).get_experiment_by_name(unique) is None
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(IRIS), "-e", "nope")
    assert out.returncode != 0 and "no entry point 'nope'" in out.stderr
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(IRIS), "--env-manager", "conda")
    assert out.returncode != 0 and "the conda env manager needs a project with conda_env" in out.stderr
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(IRIS), "--env-manager", "docker")
    assert out.returncode != 0 and "unknown env manager 'docker'" in out.stderr


def write_project(path, command):
    path.mkdir()
    (path / "MLproject").write_text(f"name: t\nentry_points:\n  main:\n    command: \"{command}\"\n")
    return path


def test_failing_command_marks_the_run_failed(ctflow_bin, sqlite_server, unique, tmp_path):
    project = write_project(tmp_path / "fails", "python -c 'import sys; print(42); sys.exit(3)'")
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(project), "--experiment-name", unique)
    assert out.returncode != 0
    result = json.loads(out.stdout)
    assert (result["status"], result["exit_code"]) == ("FAILED", 3)
    assert MlflowClient(sqlite_server.url).get_run(result["run_id"]).info.status == "FAILED"


def test_sigterm_stops_the_whole_process_group_and_marks_killed(ctflow_bin, sqlite_server, unique, tmp_path):
    marker = tmp_path / "child.pid"
    project = write_project(tmp_path / "sleeps", f"sh -c 'echo $$ > {marker}; exec sleep 600'")
    proc = subprocess.Popen([ctflow_bin, "run", str(project), "--experiment-name", unique, "--output", "json"],
                            env=env_for(sqlite_server.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    result = json.loads(stdout)
    assert result["status"] == "KILLED", stderr
    assert MlflowClient(sqlite_server.url).get_run(result["run_id"]).info.status == "KILLED"
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(child_pid, 0)
            time.sleep(0.05)


def test_virtualenv_is_built_once_and_reused(ctflow_bin, sqlite_server, unique, iris_env_cache):
    """python_env.yaml becomes a venv (python -m venv + pip); the second run reuses it.
    The cache is the session's, so the README test after this one reuses the build."""
    env = env_for(sqlite_server.url)
    env["CTFLOW_ENV_DIR"] = str(iris_env_cache)
    before = set(iris_env_cache.iterdir())
    built_before = bool(before)
    runs = []
    for attempt in range(2):
        out = subprocess.run([ctflow_bin, "run", str(IRIS), "-P", "C=0.05", "--env-manager", "virtualenv",
                              "--experiment-name", unique, "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        fresh = attempt == 0 and not built_before
        expected = "Created the environment" if fresh else "Reusing the cached environment"
        assert expected in out.stderr
        runs.append(json.loads(out.stdout)["run_id"])
    client = MlflowClient(sqlite_server.url)
    for run_id in runs:
        run = check_iris_run(client, run_id)
        assert run.data.tags["mlflow.project.env"] == "virtualenv"
    # One environment for the project, whatever else the session's cache holds (the
    # quickstart's served model builds its own).
    assert len(set(iris_env_cache.iterdir()) - before) <= 1
    assert len(list(iris_env_cache.glob("py-*"))) >= 1


def git(cwd, *args):
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"))
    return out.stdout.strip()


def make_repo(root):
    """A repository whose `proj` folder prints the version it was committed at."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    proj = root / "proj"
    proj.mkdir()
    (proj / "MLproject").write_text("name: p\nentry_points:\n  main:\n    command: \"python show.py\"\n")
    (proj / "show.py").write_text("print('version one')\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    first = git(root, "rev-parse", "HEAD")
    (proj / "show.py").write_text("print('version two')\n")
    git(root, "commit", "-q", "-am", "two")
    return proj, first


def test_dirty_git_trees_are_refused_unless_allowed(ctflow_bin, sqlite_server, unique, tmp_path):
    proj, _ = make_repo(tmp_path / "repo")
    (proj / "show.py").write_text("print('uncommitted')\n")
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(proj), "--experiment-name", unique)
    assert out.returncode != 0 and "uncommitted changes" in out.stderr
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(proj), "--experiment-name", unique, "--allow-dirty")
    assert out.returncode == 0, out.stderr
    run = MlflowClient(sqlite_server.url).get_run(json.loads(out.stdout)["run_id"])
    assert run.data.tags["mlflow.source.git.commit"] == git(tmp_path / "repo", "rev-parse", "HEAD")


def test_git_uri_with_subdirectory_and_version(ctflow_bin, sqlite_server, unique, tmp_path):
    _, first = make_repo(tmp_path / "repo")
    bare = tmp_path / "repo.git"
    git(tmp_path, "clone", "-q", "--bare", str(tmp_path / "repo"), str(bare))
    uri = f"file://{bare}#proj"
    out = ctflow_run(ctflow_bin, sqlite_server.url, uri, "--version", first, "--experiment-name", unique)
    assert out.returncode == 0, out.stderr
    assert "version one" in out.stderr
    client = MlflowClient(sqlite_server.url)
    run_id = json.loads(out.stdout)["run_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == first
    assert tags["mlflow.source.git.repoURL"] == f"file://{bare}"
    assert tags["mlflow.source.name"] == uri
    log = client.download_artifacts(run_id, "ctflow-run.log")
    assert "version one" in open(log).read()
    out = ctflow_run(ctflow_bin, sqlite_server.url, uri, "--version", "no-such-tag", "--experiment-name", unique)
    assert out.returncode != 0 and "cannot check out version 'no-such-tag'" in out.stderr


def test_conda_needs_conda_on_path(ctflow_bin, sqlite_server, unique, tmp_path):
    if subprocess.run(["sh", "-c", "command -v conda"], capture_output=True).returncode == 0:
        pytest.skip("conda is installed here: the missing-conda error cannot be shown")
    proj = tmp_path / "condaproj"
    proj.mkdir()
    (proj / "conda.yaml").write_text("name: x\ndependencies: [python=3.11]\n")
    (proj / "MLproject").write_text("name: c\nconda_env: conda.yaml\nentry_points:\n  main:\n    command: \"python -c 1\"\n")
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(proj), "--env-manager", "conda", "--experiment-name", unique)
    assert out.returncode != 0 and "conda is not on PATH" in out.stderr
    assert MlflowClient(sqlite_server.url).get_experiment_by_name(unique) is None


def test_run_id_attaches_to_an_existing_run(ctflow_bin, sqlite_server, unique, tmp_path):
    client = MlflowClient(sqlite_server.url)
    exp = client.create_experiment(unique)
    existing = client.create_run(exp, run_name="made-elsewhere")
    project = write_project(tmp_path / "attach", "python -c 'import os; print(os.environ[\\\"MLFLOW_RUN_ID\\\"])'")
    out = ctflow_run(ctflow_bin, sqlite_server.url, str(project), "--run-id", existing.info.run_id, "-P", "x=1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["run_id"] == existing.info.run_id
    assert existing.info.run_id in out.stderr
    run = client.get_run(existing.info.run_id)
    assert (run.info.status, run.info.run_name, run.data.params) == ("FINISHED", "made-elsewhere", {"x": "1"})
