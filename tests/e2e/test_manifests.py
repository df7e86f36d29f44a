"""Static checks of the Kubernetes install artifacts (no API server exists on our CI
machines): the kustomize overlays render with `kubectl kustomize` and every rendered
object passes `kubernetes-validate --strict` against the Kubernetes 1.33 schemas; the
generated CRD is a structural schema; the sample TrainingPipelines validate against the
CRD's schema; the Helm chart's values validate against values.schema.json, bad values
are refused, and every `.Values.x` a template reads exists in values.yaml. The chart's
templates are rendered by a real helm in test_helm.py."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CHART = REPO / "charts" / "ctflow"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.33.0"


def kubectl():
    path = shutil.which("kubectl")
    assert path, "kubectl (with kustomize built in) is needed to render the overlays"
    return path


def validate(text):
    """kubernetes-validate --strict on a stream of documents; its output on failure."""
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", K8S_VERSION, "-"],
        input=text, capture_output=True, text=True,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_overlays_render_and_validate_strictly(overlay):
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(d["kind"] for d in documents)
    for kind in ["ClusterRole", "ConfigMap", "CustomResourceDefinition", "Deployment", "Role", "Service"]:
        assert kind in kinds, f"{overlay} renders a {kind}: {kinds}"
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert set(deployments) == {"ctflow-server", "ctflow-controller", "ctflow-worker", "ctflow-watcher"}
    controller = deployments["ctflow-controller"]["spec"]["template"]["spec"]
    assert controller["containers"][0]["args"] == ["controller", "--kubernetes"]
    assert controller["serviceAccountName"] == "ctflow-controller"
    # Workers and the watcher talk to the tracking server only: no database credentials.
    for name in ["ctflow-worker", "ctflow-watcher"]:
        env = deployments[name]["spec"]["template"]["spec"]["containers"][0].get("env", [])
        assert "CTFLOW_BACKEND_STORE_URI" not in {e["name"] for e in env}, name
    namespace = "ctflow-dev" if overlay == "dev" else "ctflow"
    assert all(d["metadata"].get("namespace") == namespace
               for d in documents if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"))
    binding = next(d for d in documents if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == namespace
    code, output = validate(rendered)
    assert code == 0, output
    assert output.count("passed for resource") == len(documents), output


def test_strict_validation_catches_a_typo():
    bad = yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "imagee": "ctflow"}]}}},
    })
    code, output = validate(bad)
    assert code != 0 and "imagee" in output, output


def structural_problems(node, path, in_junctor=False):
    """The structural-schema rules the API server enforces on a CRD."""
    problems = []
    if in_junctor:
        for key in ("type", "description", "default", "nullable", "additionalProperties",
                    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"):
            if key in node:
                problems.append(f"{path}: {key} inside oneOf/anyOf/allOf")
    elif "type" not in node and not node.get("x-kubernetes-int-or-string") \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if "$ref" in node:
        problems.append(f"{path}: $ref")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}", in_junctor)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]", in_junctor)
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}", in_junctor)
    for junctor in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(node.get(junctor, [])):
            problems += structural_problems(sub, f"{path}.{junctor}[{i}]", True)
    return problems


def crd_schema():
    crd = yaml.safe_load((MANIFESTS / "crd" / "trainingpipelines.ctflow.dev.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_the_crd_is_structural_and_valid():
    assert structural_problems(crd_schema(), "v1alpha1") == []
    code, output = validate((MANIFESTS / "crd" / "trainingpipelines.ctflow.dev.yaml").read_text())
    assert code == 0, output


def check_jsonschema(schema_file, *documents):
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(schema_file), *map(str, documents)],
        capture_output=True, text=True,
    )


def test_sample_pipelines_match_the_crd_schema(tmp_path):
    schema = tmp_path / "trainingpipeline.schema.json"
    schema.write_text(json.dumps(crd_schema()))
    samples = sorted((MANIFESTS / "examples").glob("*.yaml"))
    assert len(samples) >= 2
    done = check_jsonschema(schema, *samples)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": "x"},
        "spec": {"project": {"entryPoint": 3}, "concurrencyPolicy": "Sometimes"},
    }))
    done = check_jsonschema(schema, bad)
    assert done.returncode != 0
    report = done.stdout + done.stderr
    assert "'uri' is a required property" in report and "Sometimes" in report, report


def test_chart_values_validate_and_bad_values_are_refused(tmp_path):
    schema = CHART / "values.schema.json"
    done = check_jsonschema(schema, CHART / "values.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    cases = {
        "unknown key": lambda v: v["workers"].update(replica=3),
        "wrong type": lambda v: v["workers"].update(replicas="two"),
        "bus scheme": lambda v: v["bus"].update(url="http://nats:4222"),
        "artifacts scheme": lambda v: v["artifacts"].update(destination="/data"),
        "duration": lambda v: v["controller"].update(leaderLease="soon"),
        "served model without a model": lambda v: v["serving"].update(models=[{"name": "iris"}]),
        "serving env manager": lambda v: v["serving"].update(
            models=[{"name": "iris", "model": "iris-classifier", "envManager": "conda"}]),
        "serving name": lambda v: v["serving"].update(models=[{"name": "Iris_1", "model": "iris-classifier"}]),
        "log without a claim": lambda v: v["serving"].update(
            models=[{"name": "iris", "model": "iris-classifier", "log": {"rollRows": 10}}]),
        "log claim and destination": lambda v: v["serving"].update(
            models=[{"name": "iris", "model": "iris-classifier", "log": {"claimName": "logs", "destination": "s3://b/l"}}]),
        "log destination scheme": lambda v: v["serving"].update(
            models=[{"name": "iris", "model": "iris-classifier", "log": {"destination": "gs://b/l"}}]),
        "log retention": lambda v: v["serving"].update(
            models=[{"name": "iris", "model": "iris-classifier", "log": {"claimName": "logs", "retention": "a week"}}]),
    }
    served = json.loads(json.dumps(values))
    served["serving"]["models"] = [{"name": "iris", "model": "iris-classifier", "alias": "champion", "replicas": 2,
                                    "workers": 2, "envManager": "virtualenv", "maxBatch": 16,
                                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                                    "log": {"claimName": "inference-logs", "rollRows": 5000, "retention": "7d"}}]
    path = tmp_path / "serving.yaml"
    path.write_text(yaml.safe_dump(served))
    done = check_jsonschema(schema, path)
    assert done.returncode == 0, done.stdout + done.stderr
    uploaded = json.loads(json.dumps(values))
    uploaded["serving"]["models"] = [{"name": "iris", "model": "iris-classifier",
                                      "log": {"destination": "s3://logs/iris", "rollInterval": "5m"}}]
    path.write_text(yaml.safe_dump(uploaded))
    done = check_jsonschema(schema, path)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, spoil in cases.items():
        bad = json.loads(json.dumps(values))
        spoil(bad)
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(bad))
        assert check_jsonschema(schema, path).returncode != 0, f"{name} was accepted"


def test_every_value_a_template_reads_exists():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    read = set()
    for template in (CHART / "templates").iterdir():
        read |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert read, "the templates read values"
    for dotted in sorted(read):
        node = values
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f".Values.{dotted} is not in values.yaml"
            node = node[part]


def test_chart_and_kustomize_grant_the_same_rbac():
    base = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text()) if d]
    chart_text = (CHART / "templates" / "rbac.yaml").read_text()
    chart_rules = re.findall(r"resources: (\[.*?\])\n\s+verbs: (\[.*?\])", chart_text)
    base_rules = [(json.dumps(r["resources"]), json.dumps(r["verbs"]))
                  for d in base if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert [(json.dumps(json.loads(r)), json.dumps(json.loads(v))) for r, v in chart_rules] == base_rules
