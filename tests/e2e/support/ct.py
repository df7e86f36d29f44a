"""The CT engine's REST API as the tests use it: pipelines written into a folder, triggers,
pipeline runs and their phases, and the small projects the pipelines train."""
import json
import urllib.error
import urllib.request

from mlflow import MlflowClient

from support.processes import REPO, wait_for

IRIS = REPO / "examples" / "iris"
TERMINAL = {"Succeeded", "GateFailed", "Rejected", "Failed", "Canceled", "Skipped"}


def api(url, path, body=None, method=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def runs_of(up, pipeline):
    status, body = api(up.url, f"/api/ctflow/v1/pipelines/{pipeline}/runs?max_results=1000")
    assert status == 200, body
    return body["pipeline_runs"]


def drift_checks(client, pipeline, status="FINISHED"):
    """A pipeline's drift check runs in the given status, oldest first."""
    experiment = client.get_experiment_by_name(f"{pipeline}-drift")
    if not experiment:
        return []
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if r.info.status == status]


def describe(up, run_id):
    status, body = api(up.url, f"/api/ctflow/v1/pipeline-runs/{run_id}")
    assert status == 200, body
    return body


def wait_phase(up, run_id, phases, timeout=180):
    phases = set(phases)
    return wait_for(f"pipeline run {run_id} to reach {phases}",
                    lambda: (lambda r: r if r["phase"] in phases else None)(describe(up, run_id)["pipeline_run"]),
                    timeout=timeout)


def trigger(up, pipeline, params=None, key=None):
    body = {"parameters": params or {}}
    if key:
        body["key"] = key
    status, out = api(up.url, f"/api/ctflow/v1/pipelines/{pipeline}/trigger", body, headers={"X-Ctflow-User": "tester"})
    assert status == 200, out
    return out


DEFAULT_GATES = """
  gates:
    ct:
      metrics:
        - { metric: accuracy, threshold: 0.9 }
        - { metric: accuracy, minAbsoluteChange: 0.0 }
"""


def iris_pipeline(name, model, extra_spec="", gates=DEFAULT_GATES):
    return f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: {name} }}
spec:
  project: {{ uri: {IRIS}, parameters: {{ C: "0.5" }}, envManager: local }}
  experiment: {name}
  model: {{ name: {model} }}
  concurrencyPolicy: Enqueue
{gates}
{extra_spec}
"""


def sleeper_project(root):
    project = root / "sleeper"
    project.mkdir(exist_ok=True)
    (project / "MLproject").write_text(
        "name: sleeper\nentry_points:\n  main:\n    parameters:\n      seconds: {type: float, default: 2}\n"
        "    command: \"sleep {seconds}\"\n")
    return project


def sleeper_pipeline(name, project, policy="Forbid", extra_spec="", seconds=None):
    params = f", parameters: {{ seconds: \"{seconds}\" }}" if seconds is not None else ""
    return f"""
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: {{ name: {name} }}
spec:
  project: {{ uri: {project}, envManager: local{params} }}
  concurrencyPolicy: {policy}
{extra_spec}
"""


def install(up, name, text):
    """Writes a pipeline file and waits until the controller has loaded it."""
    (up.pipelines_dir / f"{name}.yaml").write_text(text)
    wait_for(f"pipeline {name} to load",
             lambda: api(up.url, f"/api/ctflow/v1/pipelines/{name}")[0] == 200, timeout=30)


def champion_version(url, model):
    return MlflowClient(url).get_model_version_by_alias(model, "champion").version
