"""Fixtures and markers for end-to-end tests (the helpers they use live in support/): real ctflow servers (SQLite and PostgreSQL backends), a
throw-away PostgreSQL cluster, and a real `mlflow server`, all on free loopback ports and
started once per test session."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO, CtflowServer, TempPostgres, backend_uri, free_port, stop, wait_healthy

# The AI gateway's secrets passphrase of the backend-parametrised servers (the SQLite-only
# server runs without one).
GATEWAY_PASSPHRASE = "e2e gateway passphrase, thirty-two characters or more"

# What each module's tests need beyond a ctflow binary (see pytest.ini's markers).
MODULE_LAYERS = {
    "test_distributed.py": ("nats", "postgres", "slow"),
    "test_kubernetes.py": ("kubernetes",),
    "test_manifests.py": ("kubernetes",),
    "test_ui.py": ("browser",),
    "test_quickstart.py": ("slow",),
    "test_load.py": ("slow",),
}


def pytest_collection_modifyitems(items):
    """Marks every test with the layers it needs, from its module and its fixtures (a test
    on the backend-parametrised servers needs PostgreSQL in its `postgres` case)."""
    for item in items:
        for layer in MODULE_LAYERS.get(item.path.name, ()):
            item.add_marker(layer)
        callspec = getattr(item, "callspec", None)
        if "postgres" in item.fixturenames or (callspec is not None and "postgres" in callspec.id):
            item.add_marker("postgres")


@pytest.fixture(autouse=True)
def mlflow_environment_is_restored():
    """MLflow's environment variables as they were before each test: `mlflow.set_experiment`
    sets MLFLOW_EXPERIMENT_ID for subprocesses, and the auth tests set credentials; neither
    may reach a later test's `mlflow run` or `ctflow run`."""
    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k not in before]:
        del os.environ[key]
    os.environ.update(before)


@pytest.fixture(scope="session")
def ctflow_bin():
    path = Path(os.environ.get("CTFLOW_BIN", REPO / "target" / "debug" / "ctflow")).resolve()
    if not path.exists():
        raise RuntimeError(f"{path} does not exist: build it with `cargo build -p ctflow-cli` first")
    return str(path)


@pytest.fixture(scope="session")
def postgres():
    pg = TempPostgres()
    yield pg
    pg.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request, ctflow_bin, tmp_path_factory):
    """A ctflow server per backend, shared by the tests of the session."""
    workdir = str(tmp_path_factory.mktemp(f"ctflow-{request.param}"))
    uri = backend_uri(request, workdir)
    srv = CtflowServer(ctflow_bin, uri, workdir, env={"MLFLOW_CRYPTO_KEK_PASSPHRASE": GATEWAY_PASSPHRASE})
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def sqlite_server(ctflow_bin, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ctflow-sqlite-only"))
    srv = CtflowServer(ctflow_bin, f"sqlite:///{workdir}/ctflow.db", workdir)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """The real `mlflow server` (the reference implementation), on SQLite."""
    workdir = str(tmp_path_factory.mktemp("mlflow-server"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log = open(os.path.join(workdir, "server.log"), "wb")
    proc = subprocess.Popen(
        [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db", "--artifacts-destination", f"{workdir}/artifacts"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_healthy(url, proc, timeout=240)
    except Exception:
        stop(proc)
        log.close()
        raise
    yield url
    stop(proc)
    log.close()


@pytest.fixture()
def client(server):
    """An MlflowClient bound to the backend-parametrised ctflow server."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(server.url)
    yield MlflowClient(server.url)
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def iris_env_cache(tmp_path_factory):
    """One environment cache for the session: the iris virtualenv is built once."""
    return tmp_path_factory.mktemp("ctflow-envs")


@pytest.fixture()
def unique():
    """A name unique within the session, for experiments on shared servers."""
    unique.counter = getattr(unique, "counter", 0) + 1
    return f"e2e-{os.getpid()}-{time.monotonic_ns()}-{unique.counter}"
