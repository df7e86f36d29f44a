"""The README's run command: `ctflow up --example iris` installs the iris pipeline, builds
its environment from python_env.yaml, trains, judges the candidate and makes it the
champion, from a fresh data folder; then serves the champion (the CD hand-off) from the
model's own environment (--env-manager virtualenv), answering as the model does. Then the
README's walk-through of the loop: the shipped drifted sample dropped into incoming/
drifts against the champion's data, the retrain learns it and, scored on the same data,
beats the old champion, which serving leaves for the new one; a second batch of the same
distribution does not drift."""
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from support import IRIS, REPO, drift_checks, free_port, stop, wait_for

# examples/iris/pipeline.yaml: promotion.serving.port
SERVING = "http://127.0.0.1:5001"


def served():
    try:
        with urllib.request.urlopen(SERVING + "/ping", timeout=2) as r:
            return r.status == 200
    except (urllib.error.HTTPError, OSError):
        return False


INCOMING = IRIS / "data" / "incoming"


def served_version():
    """The registered version that answers a scoring request."""
    request = urllib.request.Request(SERVING + "/invocations", data=json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.headers["ctflow-model-version"]
    except (urllib.error.HTTPError, OSError):
        return None


def test_up_example_iris_shows_the_whole_loop(ctflow_bin, tmp_path, iris_env_cache):
    # The example's incoming folder is the user's: it starts empty here and is left so.
    dropped = [INCOMING / "drifted.csv", INCOMING / "drifted-more.csv"]
    assert not any(f.exists() for f in dropped), "examples/iris/data/incoming has files from an earlier run"
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

        # The README's walk-through: a shifted batch arrives.
        cli_env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
        shutil.copy(IRIS / "samples" / "drifted.csv", dropped[0])
        check = wait_for("the drift check of the first batch",
                         lambda: (lambda c: c[0] if c else None)(drift_checks(client, "iris")), timeout=120)
        assert check.data.tags["ctflow.drift.dataset_drift"] == "true", check.data.metrics
        assert check.data.tags["ctflow.drift.reference_version"] == "1"
        wait_for("version 2 to become the champion",
                 lambda: client.get_model_version_by_alias("iris-classifier", "champion").version == "2",
                 timeout=600, interval=1)
        out = subprocess.run([ctflow_bin, "models", "lineage", "iris-classifier@champion", "--output", "json"],
                             env=cli_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lineage = json.loads(out.stdout)
        digest = hashlib.sha256(dropped[0].read_bytes()).hexdigest()
        assert [f["sha256"] for f in lineage["data"]["files"]] == [digest], lineage["data"]
        # Judged on the same data: the old champion on today's measurements is worse.
        tags = client.get_run(lineage["run"]["run_id"]).data.tags
        scored = {role: client.get_run(tags[f"ctflow.evaluation.{role}_run"]).data.metrics["accuracy"]
                  for role in ("candidate", "champion")}
        assert scored["champion"] < scored["candidate"], scored
        wait_for("serving to move to version 2", lambda: served_version() == "2", timeout=600, interval=0.5)

        # More of the same distribution: checked against version 2's data, no drift.
        shutil.copy(IRIS / "samples" / "drifted-more.csv", dropped[1])
        second = wait_for("the drift check of the second batch",
                          lambda: (lambda c: c[1] if len(c) > 1 else None)(drift_checks(client, "iris")), timeout=120)
        assert second.data.tags["ctflow.drift.dataset_drift"] == "false", second.data.metrics
        # (The data trigger retrains on this batch too; its version may already lead.)
        assert second.data.tags["ctflow.drift.reference_version"] != "1"
        runs = json.loads(subprocess.run([ctflow_bin, "pipelines", "runs", "iris", "--output", "json"], env=cli_env,
                                         capture_output=True, text=True, timeout=60).stdout)
        drift_runs = [r for r in runs if r["trigger"]["kind"] == "drift"]
        assert all(r["trigger"]["files"] != [str(dropped[1])] for r in drift_runs), drift_runs
    finally:
        stop(proc)
        for f in dropped:
            f.unlink(missing_ok=True)
    assert proc.returncode == 0, "".join(lines) + proc.stdout.read()


def test_up_example_with_files_already_waiting_follows_the_run_that_started(ctflow_bin, tmp_path, iris_env_cache):
    """A data folder that already holds files starts a data run when `up` starts; the
    example's run-once then follows whichever run got going (saying so), never reporting a
    skip of its own."""
    waiting = INCOMING / "waiting.csv"
    assert not waiting.exists(), "examples/iris/data/incoming has files from an earlier run"
    shutil.copy(IRIS / "data" / "iris.csv", waiting)
    port = free_port()
    env = dict(os.environ, CTFLOW_ENV_DIR=str(iris_env_cache), CTFLOW_LOG="warn")
    proc = subprocess.Popen([ctflow_bin, "up", "--example", "iris", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Pipeline run ") and " - " in line:
                break
        output = "".join(lines)
        summary = [l for l in lines if l.startswith("Pipeline run ") and " - " in l]
        assert summary and ": Succeeded - " in summary[0], output
        assert "Skipped" not in output, output
        followed = [l for l in lines if "is already under way for iris" in l]
        if followed:
            assert "started by the 1 file(s) already in its data folder" in followed[0], output
            assert followed[0].split()[2] in summary[0], output
    finally:
        stop(proc)
        waiting.unlink(missing_ok=True)


def test_the_readme_run_command_names_one_binary():
    """`cargo run --profile laptop -- up --example iris` must find the one binary to run (a
    second binary in the workspace once made cargo refuse). The debug build stands in for the
    laptop one here (the suite has built it; a laptop build is measured by
    bench/first_run.sh, docs/benchmarks.md "Build time", too slow for the suite)."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    first = block.strip().splitlines()[0].split("#")[0].strip()
    assert first == "cargo run --profile laptop -- up --example iris", first
    done = subprocess.run(["cargo", "run", "--quiet", "--", "--version"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ctflow "), done.stdout


# What serves requests, and what the generic code of the request path is instantiated in:
# none of these may be built unoptimised by the README's first command.
REQUEST_PATH = {"ctflow-server", "ctflow-store", "ctflow-core", "ctflow-serving", "ctflow-watcher",
                "ctflow-metrics", "tokio", "hyper", "hyper-util", "axum", "axum-core", "serde", "serde_json",
                "sqlx", "sqlx-core", "sqlx-sqlite", "sqlx-postgres", "libsqlite3-sys", "rustls", "ring", "zstd-sys"}


def test_the_laptop_profile_leaves_the_request_path_optimised():
    """The README's first command builds the `laptop` profile: release with some crates at
    opt-level 0. Each one named must exist (cargo only warns about a name that matches
    nothing), none may be on the request path, and what ships (`dist`) and `release` name
    none, so that the container image and `cargo bench` build everything at opt-level 3."""
    import tomllib
    manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
    profiles = manifest["profile"]
    laptop = profiles["laptop"]
    assert laptop["inherits"] == "release"
    lowered = laptop["package"]
    assert lowered and all(settings == {"opt-level": 0} for settings in lowered.values()), lowered
    lock = (REPO / "Cargo.lock").read_text()
    known = {line.split('"')[1] for line in lock.splitlines() if line.startswith("name = ")}
    assert set(lowered) <= known, set(lowered) - known
    assert not set(lowered) & REQUEST_PATH, set(lowered) & REQUEST_PATH
    for shipped in ("release", "dist"):
        assert "package" not in profiles[shipped], shipped
        assert profiles[shipped].get("opt-level", 3) == 3, shipped
    assert profiles["dist"]["inherits"] == "release"
