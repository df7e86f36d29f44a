"""`ctflow` client commands, against a ctflow server and against the real `mlflow server`."""
import json
import os
import subprocess
import time
import urllib.request

import pytest


def ctflow(binary, *args, uri):
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(params=["ctflow", "mlflow"])
def tracking_url(request, sqlite_server):
    if request.param == "ctflow":
        return sqlite_server.url
    return request.getfixturevalue("mlflow_server")


def test_experiments_and_runs_commands(ctflow_bin, tracking_url, unique):
    out = ctflow(ctflow_bin, "experiments", "create", "-n", unique, uri=tracking_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Created experiment '{unique}' with id ")
    exp_id = out.stdout.strip().rsplit(" ", 1)[1]

    listed = ctflow(ctflow_bin, "experiments", "list", "--output", "json", uri=tracking_url)
    assert listed.returncode == 0, listed.stderr
    assert exp_id in [e["experiment_id"] for e in json.loads(listed.stdout)]
    table = ctflow(ctflow_bin, "experiments", "list", uri=tracking_url)
    assert unique in table.stdout and "Experiment Id" in table.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_url)
    run = client.create_run(exp_id, run_name="cli-run")
    client.log_metric(run.info.run_id, "m", 1.5)

    runs = ctflow(ctflow_bin, "runs", "list", "--experiment-id", exp_id, "--output", "json", uri=tracking_url)
    assert runs.returncode == 0, runs.stderr
    assert [r["info"]["run_id"] for r in json.loads(runs.stdout)] == [run.info.run_id]
    # Filtered and ordered as MLflow's search; the table prints times as ISO 8601 in UTC.
    other = client.create_run(exp_id, run_name="cli-other")
    client.log_metric(other.info.run_id, "m", 0.5)
    low_first = ctflow(ctflow_bin, "runs", "list", "--experiment-id", exp_id, "--order-by", "metrics.m ASC",
                       "--output", "json", uri=tracking_url)
    assert low_first.returncode == 0, low_first.stderr
    assert [r["info"]["run_name"] for r in json.loads(low_first.stdout)] == ["cli-other", "cli-run"]
    high = ctflow(ctflow_bin, "runs", "list", "--experiment-id", exp_id, "--filter", "metrics.m > 1", uri=tracking_url)
    assert high.returncode == 0, high.stderr
    assert "cli-run" in high.stdout and "cli-other" not in high.stdout, high.stdout
    assert "Start Time (UTC)" in high.stdout
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.info.start_time / 1000))
    assert started in high.stdout, high.stdout
    bad = ctflow(ctflow_bin, "runs", "list", "--experiment-id", exp_id, "--filter", "metrics.m >", uri=tracking_url)
    assert bad.returncode != 0 and "INVALID_PARAMETER_VALUE" in bad.stderr, bad.stderr
    client.delete_run(other.info.run_id)

    described = ctflow(ctflow_bin, "runs", "describe", "--run-id", run.info.run_id, uri=tracking_url)
    assert described.returncode == 0, described.stderr
    body = json.loads(described.stdout)
    assert body["info"]["run_name"] == "cli-run"
    assert body["data"]["metrics"][0]["value"] == 1.5

    duplicate = ctflow(ctflow_bin, "experiments", "create", "-n", unique, uri=tracking_url)
    assert duplicate.returncode != 0
    assert "RESOURCE_ALREADY_EXISTS" in duplicate.stderr
    missing = ctflow(ctflow_bin, "runs", "describe", "--run-id", "0" * 32, uri=tracking_url)
    assert missing.returncode != 0 and "RESOURCE_DOES_NOT_EXIST" in missing.stderr


def test_server_defaults_from_a_fresh_directory(ctflow_bin, tmp_path):
    """The README's run command: `ctflow server` with no flags keeps its data in ./ctflow-data."""
    from support import free_port, stop, wait_healthy

    port = free_port()
    proc = subprocess.Popen([ctflow_bin, "server", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id=0") as r:
            assert json.load(r)["experiment"]["name"] == "Default"
    finally:
        stop(proc)
    assert (tmp_path / "ctflow-data" / "ctflow.db").exists()
    assert (tmp_path / "ctflow-data" / "artifacts").is_dir()


def test_logs_carry_no_colour_codes_in_files_and_json_on_request(ctflow_bin, tmp_path):
    """Logs written to a file have no ANSI colour codes; `--log-format json` (or
    CTFLOW_LOG_FORMAT=json) writes one JSON object per line for log collectors."""
    from support import free_port, stop, wait_healthy

    def logs_of(extra, env):
        port = free_port()
        path = tmp_path / f"server-{port}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen([ctflow_bin, "server", "--port", str(port), *extra], cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                                    env={**os.environ, **env})
            try:
                wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30)
            finally:
                stop(proc)
        return path.read_text()

    text = logs_of([], {})
    assert "INFO" in text and "\x1b[" not in text, text
    for extra, env in [(["--log-format", "json"], {}), ([], {"CTFLOW_LOG_FORMAT": "json"})]:
        lines = [line for line in logs_of(extra, env).splitlines() if line.strip()]
        assert lines, "the server logged nothing"
        records = [json.loads(line) for line in lines]
        assert all(r["level"] in ("INFO", "WARN", "ERROR", "DEBUG") and "fields" in r for r in records), records
        assert any("listening" in json.dumps(r).lower() for r in records), records
    bad = subprocess.run([ctflow_bin, "--log-format", "xml", "crd"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "possible values: text, json" in bad.stderr, bad.stderr


def test_an_unreachable_server_and_a_missing_pipeline_say_what_to_do(ctflow_bin, sqlite_server):
    from support import free_port

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    done = subprocess.run([ctflow_bin, "experiments", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip() == (
        f"Error: cannot reach the tracking server at http://127.0.0.1:{port} (Connection refused): is it running? "
        "Start one with `ctflow server` (or `ctflow up`), or point --tracking-uri / MLFLOW_TRACKING_URI at yours"), \
        done.stderr
    env = {**os.environ, "MLFLOW_TRACKING_URI": sqlite_server.url}
    done = subprocess.run([ctflow_bin, "pipelines", "trigger", "no-such-pipeline"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip() == (f"Error: there is no pipeline 'no-such-pipeline' on {sqlite_server.url}; "
                                   "`ctflow pipelines list` shows the pipelines there are"), done.stderr


def test_a_trigger_on_a_server_without_a_controller_says_the_run_will_wait(ctflow_bin, tmp_path):
    """A bare `ctflow server` runs no controller: `pipelines trigger` records the run and says
    that it waits in Pending until one starts, and how to start one."""
    from support import CtflowServer

    server = CtflowServer(ctflow_bin, f"sqlite:///{tmp_path}/ctflow.db", str(tmp_path))
    try:
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
        path = tmp_path / "pipeline.yaml"
        path.write_text("apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: { name: idle }\n"
                        "spec:\n  project: { uri: . }\n")
        applied = subprocess.run([ctflow_bin, "pipelines", "apply", str(path)], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr
        done = subprocess.run([ctflow_bin, "pipelines", "trigger", "idle"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.strip()
        assert done.stderr.strip() == (
            f"no controller is running against {server.url}: pipeline run {run_id} waits in Pending until one "
            "starts (`ctflow up` runs one with the server; beside `ctflow server`, run `ctflow controller` and "
            "`ctflow worker`)"), done.stderr
    finally:
        server.stop()


def test_a_pipeline_file_that_does_not_fit_names_the_field_and_what_was_meant(ctflow_bin, sqlite_server, tmp_path):
    """`pipelines apply` says which field is wrong and how, once: the form a value takes,
    the unit a duration needs, and the field or value a misspelt one probably was."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": sqlite_server.url}

    def apply(spec):
        path = tmp_path / "pipeline.yaml"
        path.write_text("apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: { name: cli-bad }\n"
                        f"spec:\n  project: {{ uri: . }}\n{spec}")
        done = subprocess.run([ctflow_bin, "pipelines", "apply", str(path)], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0
        first, *rest = done.stderr.strip().splitlines()
        assert first == f"Error: {path} is not a valid pipeline:", done.stderr
        return [line.strip() for line in rest]

    assert apply("  retry: { limit: -1 }\n") == ["spec.retry.limit: must be a whole number, 0 or more; got integer -1"]
    assert apply("  timeout: 1 hour\n") == [
        "spec.timeout: '1 hour' has an unknown unit ' hour': use ms, s, m, h or d, as in 30s, 5m or 1h30m"]
    [misspelt] = apply("  gates:\n    ct:\n      metrics: [ { metric: accuracy, threshhold: 0.9 } ]\n")
    assert misspelt.startswith("spec.gates.ct.metrics[0].threshhold: unknown field 'threshhold': "
                               "did you mean 'threshold'? (valid: metric, "), misspelt
    [policy] = apply("  concurrencyPolicy: forbid\n")
    assert policy.startswith("spec.concurrencyPolicy: unknown value 'forbid': did you mean 'Forbid'?"), policy
    # Checks past typing report every problem at once, each by its field.
    assert apply("  model: { name: m }\n  triggers: [ { schedule: { cron: 'not cron' } } ]\n"
                 "  gates: { cd: { approvers: [alice] } }\n") == [
        "spec.triggers[0].schedule.cron: 'not cron' has 2 fields: a cron pattern has 5 (minute hour day month "
        "weekday), or 6 with seconds first",
        "spec.gates.cd.approvers: name who approves a manual approval: set approval: manual"]


def test_up_logs_each_pipeline_once_and_a_broken_file_plainly(ctflow_bin, tmp_path):
    """At start `ctflow up` loads each pipeline file once (one `pipeline loaded` line), and a
    file that never loaded is reported as such, its error on the same line."""
    import time

    from support import CtflowUp, wait_for

    workdir = tmp_path / "up"
    pipelines = workdir / "pipelines"
    pipelines.mkdir(parents=True)
    (pipelines / "good.yaml").write_text(
        "apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: { name: good }\n"
        "spec:\n  project: { uri: ., envManager: local }\n")
    (pipelines / "broken.yaml").write_text(
        "apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: { name: broken }\n"
        "spec:\n  project: { uri: . }\n  retry: { limit: many }\n")
    up = CtflowUp(ctflow_bin, workdir, pipelines_dir=pipelines).start()
    try:
        wait_for("the good pipeline", lambda: "pipeline loaded" in up.log_path.read_text(), timeout=30)
        time.sleep(3)  # two more scans of the folder
    finally:
        up.stop()
    lines = up.log_path.read_text().splitlines()
    assert sum("pipeline loaded" in line for line in lines) == 1, lines
    broken = [line for line in lines if "broken.yaml" in line]
    assert broken and all("nothing is loaded from it until it is fixed" in line for line in broken), broken
    assert not any("keeps its previous definition" in line for line in lines), lines


def test_a_drift_method_that_does_not_fit_a_column_is_said_once(ctflow_bin, tmp_path):
    (tmp_path / "ref.csv").write_text("kind\n" + "a\nb\n" * 50)
    (tmp_path / "cur.csv").write_text("kind\n" + "a\nb\n" * 50)
    done = subprocess.run([ctflow_bin, "drift", "--reference", str(tmp_path / "ref.csv"), "--current",
                           str(tmp_path / "cur.csv"), "--method", "ks"], capture_output=True, text=True, timeout=60)
    assert done.returncode not in (0, 3), done.stdout
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: column 'kind': "), line
    reason = line.removeprefix("Error: column 'kind': ")
    assert reason and line.count(reason) == 1, line
