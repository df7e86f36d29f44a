"""ctflow's Kubernetes mode end to end with the real binaries: `ctflow controller
--kubernetes` and `ctflow worker --executor kubernetes` against `ctflow-kube-fake`, an
in-process FAKE Kubernetes API server (no real API server can run on our CI machines;
`crates/ctflow-kube-fake` says what it emulates). A real nats-server and a real ctflow
tracking server complete the cluster.

The fake has no kubelet, so `Kubelet` below plays it and the Job controller: for each Job
it creates the pod, runs the pod's container command here (this machine stands in for the
image), stores the output as the pod's log and sets pod and Job status as Kubernetes does.
A real-cluster variant lives in test_kubernetes_cluster.py (opt-in)."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from support import IRIS, REPO, NatsServer, Service, api, describe, free_port, stop, wait_for, wait_healthy, wait_phase

NAMESPACE = "ml"
FAKE_BIN = Path(os.environ.get("CTFLOW_BIN", REPO / "target" / "debug" / "ctflow")).resolve().parent / "ctflow-kube-fake"
BIN = Path(sys.executable).parent


def kube(url, path, body=None, method=None, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, (json.loads(text) if text.startswith(b"{") or text.startswith(b"[") else text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def merge_status(url, path, status):
    code, body = kube(url, path + "/status", {"status": status}, "PATCH", "application/merge-patch+json")
    assert code == 200, body


class Kubelet(threading.Thread):
    """The fake cluster's kubelet and Job controller (see the module docstring)."""

    def __init__(self, url, ctflow_bin, workdir, unpullable=()):
        super().__init__(daemon=True)
        self.url, self.ctflow_bin, self.workdir = url, ctflow_bin, Path(workdir)
        self.unpullable = set(unpullable)
        self.seen = set()
        self.stopping = threading.Event()
        self.ran = []

    def run(self):
        while not self.stopping.is_set():
            code, jobs = kube(self.url, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
            for job in jobs.get("items", []) if code == 200 else []:
                uid = job["metadata"]["uid"]
                if uid not in self.seen:
                    self.seen.add(uid)
                    threading.Thread(target=self.start_pod, args=(job,), daemon=True).start()
            self.stopping.wait(0.2)

    def job_exists(self, name, uid):
        code, job = kube(self.url, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}")
        return code == 200 and job["metadata"]["uid"] == uid

    def start_pod(self, job):
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        pod_name = f"{name}-x7k2p"
        template = job["spec"]["template"]
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": NAMESPACE,
                         "labels": {**template["metadata"].get("labels", {}), "job-name": name, "controller-uid": uid},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": template["spec"],
        }
        code, body = kube(self.url, f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        assert code == 201, body
        pod_path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}"
        job_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}"
        container = template["spec"]["containers"][0]
        if container["image"] in self.unpullable:
            merge_status(self.url, pod_path, {"phase": "Pending", "containerStatuses": [{
                "name": "job", "ready": False, "restartCount": 0, "image": container["image"], "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": f'Back-off pulling image "{container["image"]}"'}}}]})
            return
        merge_status(self.url, pod_path, {"phase": "Running"})
        merge_status(self.url, job_path, {"active": 1, "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        env = dict(os.environ)
        env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
        for var in container.get("env", []):
            env[var["name"]] = var["value"]
        assert container["command"] == ["ctflow"]
        command = [self.ctflow_bin, *container["args"]]
        self.ran.append({"job": name, "command": command, "env": {v["name"]: v["value"] for v in container.get("env", [])}})
        log = open(self.workdir / f"{pod_name}.log", "wb+")
        proc = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None:
            if not self.job_exists(name, uid):
                # The Job was deleted: the pod is killed with it.
                stop(proc)
                return
            time.sleep(0.2)
        log.seek(0)
        output = log.read()
        log.close()
        req = urllib.request.Request(f"{self.url}/fake/logs/{NAMESPACE}/{pod_name}", data=output, method="PUT")
        urllib.request.urlopen(req, timeout=10).read()
        code = proc.returncode
        merge_status(self.url, pod_path, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{
            "name": "job", "ready": False, "restartCount": 0, "image": container["image"], "imageID": "",
            "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]})
        if code == 0:
            merge_status(self.url, job_path, {"active": 0, "succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]})
        else:
            merge_status(self.url, job_path, {"active": 0, "failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}]})


class FakeCluster:
    def __init__(self, ctflow_bin, workdir):
        self.workdir = Path(workdir)
        assert FAKE_BIN.exists(), f"{FAKE_BIN} is missing: cargo build --workspace builds it"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.fake_log = open(self.workdir / "fake-apiserver.log", "wb")
        self.fake = subprocess.Popen([str(FAKE_BIN), str(self.kubeconfig)], stdout=subprocess.PIPE,
                                     stderr=self.fake_log, start_new_session=True)
        line = self.fake.stdout.readline().decode()
        assert "http://" in line, line
        self.kube_url = line.split("http://", 1)[1].strip()
        self.kube_url = "http://" + self.kube_url
        self.nats = NatsServer(workdir).start()
        backend = f"sqlite:///{self.workdir / 'ctflow.db'}"
        bus = ["--bus", self.nats.url, "--job-lease", "5s"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_log = open(self.workdir / "server.log", "wb")
        self.server = subprocess.Popen(
            [ctflow_bin, "server", "--port", str(self.port), "--backend-store-uri", backend,
             "--artifacts-destination", str(self.workdir / "artifacts"), *bus],
            cwd=self.workdir, stdout=self.server_log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.url, self.server, timeout=60)
        os.environ["KUBECONFIG"] = str(self.kubeconfig)
        self.controller = Service(ctflow_bin, "controller", workdir,
                                  ["--kubernetes", "--backend-store-uri", backend, "--id", "controller-0",
                                   "--status-refresh", "1s", "--leader-lease", "3s", *bus], "controller").start()
        self.worker = Service(ctflow_bin, "worker", workdir,
                              ["--executor", "kubernetes", "--tracking-uri", self.url, "--job-poll", "200ms",
                               "--concurrency", "2", *bus], "worker").start()
        self.kubelet = Kubelet(self.kube_url, ctflow_bin, workdir, unpullable={"acme/missing:1"})
        self.kubelet.start()

    def stop(self):
        self.kubelet.stopping.set()
        for service in (self.worker, self.controller):
            service.stop()
        stop(self.server)
        self.nats.stop()
        stop(self.fake)
        os.environ.pop("KUBECONFIG", None)

    def apply(self, name, spec):
        obj = {"apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline",
               "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
        code, body = kube(self.kube_url, f"/apis/ctflow.dev/v1alpha1/namespaces/{NAMESPACE}/trainingpipelines", obj)
        assert code == 201, body
        return body

    def get(self, plural, name, group="apis/ctflow.dev/v1alpha1"):
        code, body = kube(self.kube_url, f"/{group}/namespaces/{NAMESPACE}/{plural}/{name}")
        return body if code == 200 else None

    def items(self, plural, group):
        code, body = kube(self.kube_url, f"/{group}/namespaces/{NAMESPACE}/{plural}")
        assert code == 200, body
        return body["items"]

    def events(self, reason=None):
        return [e for e in self.items("events", "apis/events.k8s.io/v1") if reason is None or e["reason"] == reason]


@pytest.fixture(scope="module")
def cluster(ctflow_bin, tmp_path_factory):
    instance = FakeCluster(ctflow_bin, tmp_path_factory.mktemp("k8s"))
    yield instance
    instance.stop()


IRIS_SPEC = {
    "project": {"uri": str(IRIS), "parameters": {"C": "0.5"}, "image": "acme/iris:1"},
    "experiment": "k8s-iris",
    "model": {"name": "k8s-iris-model"},
    "gates": {"ci": {"checks": [{"name": "imports", "run": "python -c 'import sklearn'"}]},
              "ct": {"metrics": [{"metric": "accuracy", "threshold": 0.9}]}},
    "resources": {"cpu": "1", "memory": "1Gi"},
    "timeout": "10m",
    "kubernetes": {"nodeSelector": {"pool": "cpu"}, "ttlAfterFinished": "5m"},
}


def test_a_training_pipeline_trains_as_a_job_and_promotes(cluster):
    created = cluster.apply("iris", IRIS_SPEC)
    status = wait_for("the pipeline Ready", lambda: (cluster.get("trainingpipelines", "iris") or {}).get("status")
                      if (cluster.get("trainingpipelines", "iris") or {}).get("status", {}).get("phase") == "Ready" else None,
                      timeout=60)
    assert status["pipeline"] == "ml-iris"
    assert cluster.get("trainingpipelines", "iris")["metadata"]["finalizers"] == ["ctflow.dev/pipeline"]

    code, out = api(cluster.url, "/api/ctflow/v1/pipelines/ml-iris/trigger", {"parameters": {}},
                    headers={"X-Ctflow-User": "tester"})
    assert code == 200, out
    run_id = out["pipeline_run"]["id"]
    finished = wait_phase(cluster, run_id, {"Succeeded", "Failed", "GateFailed"}, timeout=300)
    assert finished["phase"] == "Succeeded", describe(cluster, run_id)

    # The Job: deterministic name, owned by the TrainingPipeline, ctflow run attached to the run.
    jobs = cluster.items("jobs", "apis/batch/v1")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    job = jobs[0]
    assert job["metadata"]["name"] == f"ctflow-{run_id}-1"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("TrainingPipeline", "iris", created["metadata"]["uid"])
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "cpu"}
    container = pod_spec["containers"][0]
    assert container["image"] == "acme/iris:1"
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    env = {v["name"]: v["value"] for v in container["env"]}
    mlflow_run = finished["run_id"]
    assert env["MLFLOW_RUN_ID"] == mlflow_run and env["MLFLOW_TRACKING_URI"] == cluster.url
    assert json.loads(env["CTFLOW_CI_CHECKS"]) == [{"name": "imports", "run": "python -c 'import sklearn'"}]
    # The Job as created passes strict validation against the Kubernetes 1.33 schemas.
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        job["metadata"].pop(key, None)
    job.pop("status", None)
    done = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", "1.33.0", "-"],
                          input=yaml.safe_dump(job), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    # The run: trained in the "pod", its log attached, tagged with its Job.
    client = MlflowClient(cluster.url)
    run = client.get_run(mlflow_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.backend"] == "kubernetes"
    assert run.data.tags["ctflow.kubernetes.job"] == f"{NAMESPACE}/{job['metadata']['name']}"
    assert run.data.tags["ctflow.ci"] == "passed"
    assert run.data.metrics["accuracy"] > 0.9
    artifacts = {a.path for a in client.list_artifacts(mlflow_run)}
    assert {"kubernetes-pod.log", "ctflow-run.log"} <= artifacts, artifacts
    pod_log = Path(client.download_artifacts(mlflow_run, "kubernetes-pod.log", str(cluster.workdir)))
    assert "Running command" in pod_log.read_text()
    assert client.get_model_version_by_alias("k8s-iris-model", "champion").version == "1"

    # The status and the Events tell the story.
    status = wait_for("the champion in the status", lambda: (lambda s: s if s.get("champion") == "1" and
                      s.get("lastRun", {}).get("phase") == "Succeeded" else None)(
        cluster.get("trainingpipelines", "iris")["status"]), timeout=30)
    assert status["phase"] == "Ready" and status["lastRun"]["id"] == run_id
    assert status["lastRun"]["mlflowRunId"] == mlflow_run
    reasons = [e["reason"] for e in sorted(cluster.events(), key=lambda e: e["eventTime"])]
    for reason in ("Stored", "Triggered", "RunSucceeded", "Promoted"):
        assert reason in reasons, reasons
    assert any(r.startswith("Gate") for r in reasons), reasons


def test_an_image_that_cannot_be_pulled_fails_the_run_clearly(cluster):
    spec = dict(IRIS_SPEC, project=dict(IRIS_SPEC["project"], image="acme/missing:1"),
                model={"name": "k8s-missing-model"}, experiment="k8s-missing")
    cluster.apply("missing", spec)
    wait_for("stored", lambda: api(cluster.url, "/api/ctflow/v1/pipelines/ml-missing")[0] == 200, timeout=60)
    code, out = api(cluster.url, "/api/ctflow/v1/pipelines/ml-missing/trigger", {"parameters": {}})
    assert code == 200, out
    run_id = out["pipeline_run"]["id"]
    failed = wait_phase(cluster, run_id, {"Failed", "Succeeded"}, timeout=120)
    assert failed["phase"] == "Failed"
    assert "ImagePullBackOff" in failed["decision"] and "acme/missing:1" in failed["decision"], failed["decision"]
    run = MlflowClient(cluster.url).get_run(failed["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["ctflow.kubernetes.failure"] == "ImagePullBackOff"
    wait_for("the stuck Job deleted", lambda: cluster.get("jobs", f"ctflow-{run_id}-1", "apis/batch/v1") is None,
             timeout=30)


def test_deleting_a_training_pipeline_cleans_up(cluster):
    assert api(cluster.url, "/api/ctflow/v1/pipelines/ml-iris")[0] == 200
    code, body = kube(cluster.kube_url, f"/apis/ctflow.dev/v1alpha1/namespaces/{NAMESPACE}/trainingpipelines/iris",
                      method="DELETE")
    assert code == 200, body
    wait_for("the object gone", lambda: cluster.get("trainingpipelines", "iris") is None, timeout=30)
    assert api(cluster.url, "/api/ctflow/v1/pipelines/ml-iris")[0] == 404
    # The Job and its pod went with their owner.
    assert [j for j in cluster.items("jobs", "apis/batch/v1")
            if j["metadata"]["labels"]["ctflow.dev/pipeline"] == "ml-iris"] == []
    assert cluster.events("Deleted")


def test_a_spec_change_mid_run_waits_and_deleting_stops_the_running_job(cluster, tmp_path):
    from support import sleeper_project
    project = sleeper_project(tmp_path)
    cluster.apply("sleeper", {"project": {"uri": str(project), "parameters": {"seconds": "300"}, "image": "acme/sleeper:1"}})
    wait_for("stored", lambda: api(cluster.url, "/api/ctflow/v1/pipelines/ml-sleeper")[0] == 200, timeout=60)
    code, out = api(cluster.url, "/api/ctflow/v1/pipelines/ml-sleeper/trigger", {"parameters": {}})
    assert code == 200, out
    run_id = out["pipeline_run"]["id"]
    job_name = f"ctflow-{run_id}-1"
    wait_for("the pod running", lambda: any(r["job"] == job_name for r in cluster.kubelet.ran), timeout=60)
    running = wait_phase(cluster, run_id, {"Running"}, timeout=60)

    # A spec change while the Job runs: stored (the next run uses it), the running one keeps its own.
    path = f"/apis/ctflow.dev/v1alpha1/namespaces/{NAMESPACE}/trainingpipelines/sleeper"
    code, body = kube(cluster.kube_url, path, {"spec": {"project": {"parameters": {"seconds": "1"}}}}, "PATCH",
                      "application/merge-patch+json")
    assert code == 200, body
    wait_for("observedGeneration 2", lambda: cluster.get("trainingpipelines", "sleeper")["status"]
             .get("observedGeneration") == 2, timeout=30)
    code, stored = api(cluster.url, "/api/ctflow/v1/pipelines/ml-sleeper")
    assert stored["pipeline"]["document"]["spec"]["project"]["parameters"] == {"seconds": "1"}
    assert cluster.get("jobs", job_name, "apis/batch/v1") is not None, "the running Job is left alone"
    assert describe(cluster, run_id)["pipeline_run"]["phase"] == "Running"

    # Deleting the object cancels the run: the worker deletes the Job, whose pod stops.
    code, body = kube(cluster.kube_url, path, method="DELETE")
    assert code == 200, body
    canceled = wait_phase(cluster, run_id, {"Canceled"}, timeout=60)
    assert "deleted" in canceled["decision"]
    wait_for("the object gone", lambda: cluster.get("trainingpipelines", "sleeper") is None, timeout=30)
    wait_for("the Job gone", lambda: cluster.get("jobs", job_name, "apis/batch/v1") is None, timeout=30)
    run = wait_for("the run ended", lambda: (lambda r: r if r.info.status != "RUNNING" else None)(
        MlflowClient(cluster.url).get_run(running["run_id"])), timeout=30)
    assert run.info.status == "KILLED"


def test_a_job_trains_on_its_data_snapshot_and_evaluates_on_it_in_the_pod(cluster, tmp_path):
    """The pipeline names its data and a same-data evaluation step: the Job's pod (`ctflow
    run --pipeline-run`) reads the snapshot from the server (no manifest inside the pod
    spec), trains on exactly those files, and scores candidate and champion on them in the
    image before the gate decides."""
    import shutil
    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    spec = dict(IRIS_SPEC, experiment="k8s-data", model={"name": "k8s-data-model"},
                data={"paths": [str(data / "iris.csv"), str(data / "incoming" / "*.csv")],
                      "window": {"lastRows": 300}},
                gates={"ct": {"evaluation": {"entryPoint": "evaluate"},
                              "metrics": [{"metric": "accuracy", "threshold": 0.9},
                                          {"metric": "accuracy", "minAbsoluteChange": 0.0}]}})
    cluster.apply("data", spec)
    wait_for("stored", lambda: api(cluster.url, "/api/ctflow/v1/pipelines/ml-data")[0] == 200, timeout=60)
    client = MlflowClient(cluster.url)

    def train():
        code, out = api(cluster.url, "/api/ctflow/v1/pipelines/ml-data/trigger", {"parameters": {}})
        assert code == 200, out
        run_id = out["pipeline_run"]["id"]
        finished = wait_phase(cluster, run_id, {"Succeeded", "Failed", "GateFailed"}, timeout=300)
        assert finished["phase"] == "Succeeded", describe(cluster, run_id)
        return finished, describe(cluster, run_id)["data_snapshot"]

    first, snapshot = train()
    assert snapshot["rows"] == 150
    ran = next(r for r in cluster.kubelet.ran if r["job"] == f"ctflow-{first['id']}-1")
    at = ran["command"].index("--pipeline-run")
    assert ran["command"][at + 1] == first["id"]
    assert not any(snapshot["id"] in value for value in ran["env"].values())
    run = client.get_run(first["run_id"])
    assert run.data.metrics["training_rows"] == 150
    assert run.data.tags["ctflow.data.snapshot"] == snapshot["id"]
    assert [i.dataset.digest for i in run.inputs.dataset_inputs] == [snapshot["id"][:16]]
    assert "ctflow.evaluation.candidate_run" in run.data.tags  # no champion yet: the candidate alone

    shutil.copy(IRIS / "samples" / "drifted.csv", data / "incoming" / "drifted.csv")
    second, snapshot = train()
    assert snapshot["rows"] == 300 and any(f["path"].endswith("drifted.csv") for f in snapshot["files"])
    tags = client.get_run(second["run_id"]).data.tags
    assert tags["ctflow.evaluation.snapshot"] == snapshot["id"]
    assert tags["ctflow.evaluation.champion_version"] == "1"
    for role in ("candidate", "champion"):
        scored = client.get_run(tags[f"ctflow.evaluation.{role}_run"])
        assert scored.data.tags["ctflow.evaluation.of"] == second["run_id"]
        assert [i.dataset.digest for i in scored.inputs.dataset_inputs] == [snapshot["id"][:16]]
    gate = [e for e in describe(cluster, second["id"])["events"]
            if isinstance(e.get("detail"), dict) and "comparisons" in e["detail"]][-1]["detail"]
    assert gate["sameData"] == snapshot["id"], gate
    assert client.get_model_version_by_alias("k8s-data-model", "champion").version == "2"
