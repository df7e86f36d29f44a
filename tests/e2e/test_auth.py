"""`ctflow server --auth` with the real mlflow client: HTTP Basic from
MLFLOW_TRACKING_USERNAME/PASSWORD and bearer tokens from MLFLOW_TRACKING_TOKEN; MLflow's
user API (AuthServiceClient); READ/EDIT/MANAGE/NO_PERMISSIONS per experiment and per
registered model with a READ default; 401 without credentials, 403 PERMISSION_DENIED
beyond one's permission, for each kind of endpoint; the signed-in user owns what they do."""
import base64
import json
import os
import subprocess
import urllib.error
import urllib.request

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient

from support import CtflowServer, backend_uri

ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-12", "carol": "carol-password-1"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def auth_server(request, ctflow_bin, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp(f"auth-{request.param}"))
    uri = backend_uri(request, workdir)
    created = subprocess.run([ctflow_bin, "users", "create-admin", "--username", ADMIN, "--password-stdin",
                              "--backend-store-uri", uri], input=ADMIN_PASSWORD + "\n", capture_output=True,
                             text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    srv = CtflowServer(ctflow_bin, uri, workdir, extra=["--auth"])
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                            "MLFLOW_TRACKING_TOKEN")}
    as_user(ADMIN)
    admin = AuthServiceClient(srv.url)
    for name, password in PASSWORDS.items():
        admin.create_user(name, password)
    yield srv
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    srv.stop()


def as_user(name, password=None):
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    os.environ["MLFLOW_TRACKING_USERNAME"] = name
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password or (ADMIN_PASSWORD if name == ADMIN else PASSWORDS[name])


def with_token(token):
    os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
    os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    os.environ["MLFLOW_TRACKING_TOKEN"] = token


def decoded(text):
    try:
        return json.loads(text or b"{}")
    except json.JSONDecodeError:
        return text.decode()


def raw(url, path, method="GET", body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), decoded(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), decoded(e.read())


def denied(call):
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == "PERMISSION_DENIED", caught.value
    return caught.value


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=10", None),
    ("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": "x", "metrics": []}),
    ("GET", "/api/2.0/mlflow/registered-models/search", None),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/f.txt", None),
    ("GET", "/api/2.0/mlflow/users/get?username=alice", None),
    ("GET", "/api/ctflow/v1/pipelines", None),
])
def test_requests_without_credentials_get_401(auth_server, method, path, body):
    status, headers, answer = raw(auth_server.url, path, method, body)
    assert status == 401, answer
    assert answer["error_code"] == "UNAUTHENTICATED"
    assert headers.get("WWW-Authenticate", headers.get("www-authenticate", "")).startswith("Basic")
    wrong = "Basic " + base64.b64encode(b"alice:not-her-password").decode()
    status, _, answer = raw(auth_server.url, path, method, body, {"Authorization": wrong})
    assert status == 401 and answer["error_code"] == "UNAUTHENTICATED"
    status, _, _ = raw(auth_server.url, path, method, body, {"Authorization": "Bearer ctf_not_a_token"})
    assert status == 401
    # Health stays open for probes.
    assert raw(auth_server.url, "/health")[0] == 200


def test_the_signed_in_user_owns_runs_and_ledger_entries(auth_server):
    as_user("alice")
    client = MlflowClient(auth_server.url)
    exp = client.create_experiment("alice-owned")
    run = client.create_run(exp, tags={"mlflow.user": "mallory"})
    assert run.info.user_id == "alice"
    assert client.get_run(run.info.run_id).data.tags["mlflow.user"] == "alice"
    client.create_registered_model("alice-model")
    version = client.create_model_version("alice-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("alice-model", "champion", version.version)
    status, _, history = raw(auth_server.url, "/api/ctflow/v1/models/alice-model/history",
                             headers={"Authorization": "Basic " + base64.b64encode(
                                 b"alice:" + PASSWORDS["alice"].encode()).decode(),
                                 "X-Ctflow-User": "mallory"})
    assert status == 200, history
    assert {e["user"] for e in history["entries"]} == {"alice"}, history


def test_permissions_per_experiment_and_model_with_a_read_default(auth_server, tmp_path):
    as_user("alice")
    alice = MlflowClient(auth_server.url)
    exp = alice.create_experiment("alice-private")
    run = alice.create_run(exp)
    alice.log_metric(run.info.run_id, "m", 1.0)
    (tmp_path / "f.txt").write_text("alice's")
    alice.log_artifact(run.info.run_id, str(tmp_path / "f.txt"))
    alice.create_registered_model("alice-registered")
    version = alice.create_model_version("alice-registered", f"runs:/{run.info.run_id}/model", run.info.run_id)

    # bob holds the default, READ: he reads everything of alice's and changes nothing.
    as_user("bob")
    bob = MlflowClient(auth_server.url)
    assert bob.get_experiment(exp).name == "alice-private"
    assert bob.get_run(run.info.run_id).data.metrics["m"] == 1.0
    assert bob.get_registered_model("alice-registered").name == "alice-registered"
    assert "f.txt" in [f.path for f in bob.list_artifacts(run.info.run_id)]
    denied(lambda: bob.create_run(exp))                                     # experiment EDIT
    denied(lambda: bob.set_experiment_tag(exp, "k", "v"))
    denied(lambda: bob.delete_experiment(exp))                              # experiment MANAGE
    denied(lambda: bob.log_metric(run.info.run_id, "m", 2.0))               # run EDIT
    denied(lambda: bob.log_batch(run.info.run_id, params=[mlflow.entities.Param("p", "1")]))
    denied(lambda: bob.delete_run(run.info.run_id))
    (tmp_path / "g.txt").write_text("bob's")
    with pytest.raises(requests.HTTPError) as caught:                       # artifact proxy
        bob.log_artifact(run.info.run_id, str(tmp_path / "g.txt"))
    assert caught.value.response.status_code == 403
    assert caught.value.response.json()["error_code"] == "PERMISSION_DENIED"
    denied(lambda: bob.set_registered_model_alias("alice-registered", "champion", version.version))
    denied(lambda: bob.update_model_version("alice-registered", version.version, "x"))
    denied(lambda: bob.delete_registered_model("alice-registered"))
    denied(lambda: AuthServiceClient(auth_server.url).create_user("eve", "eve-password-1"))  # admin API
    denied(lambda: AuthServiceClient(auth_server.url).get_user("alice"))
    assert AuthServiceClient(auth_server.url).get_user("bob").username == "bob"

    # alice, MANAGE as the creator, gives bob EDIT on her experiment and carol nothing.
    as_user("alice")
    auth = AuthServiceClient(auth_server.url)
    auth.grant_user_permission("bob", "experiment", exp, "EDIT")
    auth.grant_user_permission("carol", "experiment", exp, "NO_PERMISSIONS")
    auth.grant_user_permission("carol", "registered_model", "alice-registered", "NO_PERMISSIONS")
    assert auth.get_user_permission("bob", "experiment", exp).permission == "EDIT"
    as_user("bob")
    bob.log_metric(run.info.run_id, "m", 3.0)
    bob_run = bob.create_run(exp)
    assert bob_run.info.user_id == "bob"
    denied(lambda: bob.delete_experiment(exp))
    denied(lambda: AuthServiceClient(auth_server.url).grant_user_permission("bob", "experiment", exp, "MANAGE"))

    as_user("carol")
    carol = MlflowClient(auth_server.url)
    denied(lambda: carol.get_experiment(exp))
    denied(lambda: carol.get_run(run.info.run_id))
    denied(lambda: carol.get_registered_model("alice-registered"))
    denied(lambda: carol.search_runs([exp]))
    # The id is judged as the handler reads it: `0<id>` is the same experiment, and a
    # query string on a POST is not what the handler acts on.
    carol_auth = {"Authorization": "Basic " + base64.b64encode(b"carol:" + PASSWORDS["carol"].encode()).decode()}
    status, _, answer = raw(auth_server.url, f"/api/2.0/mlflow/experiments/get?experiment_id=0{exp}",
                            headers=carol_auth)
    assert status == 403 and answer["error_code"] == "PERMISSION_DENIED", answer
    carol_exp = carol.create_experiment("carol-own")
    # (without experiment_id in the body the run would go to the default experiment,
    # where carol may only read)
    status, _, answer = raw(auth_server.url, f"/api/2.0/mlflow/runs/create?experiment_id={carol_exp}", "POST",
                            {}, headers=carol_auth)
    assert status == 403 and answer["error_code"] == "PERMISSION_DENIED", answer
    assert exp not in [e.experiment_id for e in carol.search_experiments(max_results=1000)]
    assert "alice-registered" not in [m.name for m in carol.search_registered_models(max_results=1000)]

    # The admin may do anything.
    as_user(ADMIN)
    admin = MlflowClient(auth_server.url)
    admin.log_metric(run.info.run_id, "m", 4.0)
    auth = AuthServiceClient(auth_server.url)
    auth.grant_user_permission("carol", "experiment", exp, "READ")
    as_user("carol")
    assert carol.get_experiment(exp).name == "alice-private"


def test_tokens_sign_in_until_deleted(auth_server, ctflow_bin):
    as_user("alice")
    env = dict(os.environ, MLFLOW_TRACKING_URI=auth_server.url)
    created = subprocess.run([ctflow_bin, "users", "create-token", "--name", "ci", "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    assert token.startswith("ctf_")
    with_token(token)
    client = MlflowClient(auth_server.url)
    exp = client.create_experiment("made-with-a-token")
    mlflow.set_tracking_uri(auth_server.url)
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params({"C": "0.05"})
        mlflow.log_metric("accuracy", 0.93)
    assert client.get_run(run.info.run_id).info.user_id == "alice"
    headers = {"Authorization": f"Bearer {token}"}
    status, _, listed = raw(auth_server.url, "/api/ctflow/v1/tokens", headers=headers)
    assert status == 200 and [t["name"] for t in listed["tokens"]] == ["ci"]
    assert "token" not in listed["tokens"][0]
    status, _, _ = raw(auth_server.url, f"/api/ctflow/v1/tokens/{listed['tokens'][0]['id']}", "DELETE",
                       headers=headers)
    assert status == 200
    with pytest.raises((MlflowException, RestException)):
        client.get_experiment(exp)
    status, _, answer = raw(auth_server.url, "/api/2.0/mlflow/experiments/get?experiment_id=0", headers=headers)
    assert status == 401 and answer["error_code"] == "UNAUTHENTICATED"


def test_users_are_managed_through_mlflows_auth_client(auth_server):
    as_user(ADMIN)
    auth = AuthServiceClient(auth_server.url)
    user = auth.create_user("dave", "dave-password-1")
    assert (user.username, user.is_admin) == ("dave", False)
    with pytest.raises(MlflowException) as caught:
        auth.create_user("dave", "dave-password-1")
    assert caught.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as caught:
        auth.create_user("erin", "short")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    auth.update_user_admin("dave", True)
    assert auth.get_user("dave").is_admin
    # dave changes his own password, giving the current one.
    as_user("dave", "dave-password-1")
    AuthServiceClient(auth_server.url).update_user_password("dave", "dave-password-2",
                                                            current_password="dave-password-1")
    as_user("dave", "dave-password-2")
    assert AuthServiceClient(auth_server.url).get_user("dave").username == "dave"
    as_user(ADMIN)
    auth.delete_user("dave")
    with pytest.raises(MlflowException) as caught:
        auth.get_user("dave")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    as_user("dave", "dave-password-2")
    with pytest.raises(MlflowException):
        MlflowClient(auth_server.url).search_experiments()


def test_up_with_auth_runs_its_jobs_under_its_own_token(ctflow_bin, tmp_path):
    """`ctflow up --auth`: the admin comes from the environment, the embedded workers sign
    in with a token of their own (as a job's training code does through the mlflow
    client), and everyone else needs credentials."""
    from support import CtflowUp
    from support import TERMINAL, iris_pipeline, wait_for

    up = CtflowUp(ctflow_bin, tmp_path, extra=["--auth"],
                  env={"CTFLOW_ADMIN_USERNAME": ADMIN, "CTFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}).start()
    admin = {"Authorization": "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()}
    try:
        assert raw(up.url, "/api/ctflow/v1/pipelines")[0] == 401
        (up.pipelines_dir / "guarded.yaml").write_text(iris_pipeline("guarded", "guarded-model"))
        wait_for("the pipeline to load",
                 lambda: raw(up.url, "/api/ctflow/v1/pipelines/guarded", headers=admin)[0] == 200, timeout=30)
        status, _, triggered = raw(up.url, "/api/ctflow/v1/pipelines/guarded/trigger", "POST",
                                   {"parameters": {}}, admin)
        assert status == 200, triggered
        run_id = triggered["pipeline_run"]["id"]

        def phase():
            status, _, body = raw(up.url, f"/api/ctflow/v1/pipeline-runs/{run_id}", headers=admin)
            assert status == 200, body
            return body["pipeline_run"] if body["pipeline_run"]["phase"] in TERMINAL else None

        done = wait_for("the guarded run", phase, timeout=240)
        assert done["phase"] == "Succeeded", (done, (tmp_path / "up-1.log").read_text()[-3000:])
        as_user(ADMIN)
        client = MlflowClient(up.url)
        run = client.get_run(done["run_id"])
        assert run.info.user_id == "ctflow-services"
        assert client.get_model_version_by_alias("guarded-model", "champion").version == str(done["model_version"])
        # The service user is an admin no one signs in as: its password was never shown.
        listed = [u["username"] for u in raw(up.url, "/api/2.0/mlflow/users/list", headers=admin)[2]["users"]]
        assert "ctflow-services" in listed
    finally:
        up.stop()
