"""Fixtures for end-to-end tests: real ctflow servers (SQLite and PostgreSQL backends), a
throw-away PostgreSQL cluster, and a real `mlflow server`, all on free loopback ports and
started once per test session."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_BIN_DIRS = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy in {timeout}s")


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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


def _pg_tool(name):
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL tool {name} not found; .ci/run installs PostgreSQL")
    return found


def _as_postgres(args):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + args
    return args


class TempPostgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ctflow-e2e-pg")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        subprocess.run(_as_postgres([_pg_tool("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.port = free_port()
        self.opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                     "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(_as_postgres([_pg_tool("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", self.opts, "-w", "start"]),
                       check=True, capture_output=True)
        self.count = 0

    def restart(self):
        """Stops the server at once (connections are cut) and starts it again."""
        subprocess.run(_as_postgres([_pg_tool("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", self.opts,
                                     "-m", "fast", "-w", "restart"]), check=True, capture_output=True)

    def new_database(self):
        self.count += 1
        name = f"e2e_{self.count}"
        subprocess.run([_pg_tool("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        subprocess.run(_as_postgres([_pg_tool("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = TempPostgres()
    yield pg
    pg.stop()


class CtflowServer:
    def __init__(self, binary, backend_uri, workdir, extra=(), artifacts=None, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log = open(os.path.join(workdir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "server", "--port", str(self.port), "--backend-store-uri", backend_uri,
             "--artifacts-destination", artifacts or os.path.join(workdir, "artifacts"), *extra],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        wait_healthy(self.url, self.proc, timeout=30)

    def stop(self):
        stop(self.proc)
        self.log.close()


def backend_uri(request, workdir):
    """A fresh store for a fixture parametrised by backend: a SQLite file in `workdir`, or
    a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/ctflow.db"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request, ctflow_bin, tmp_path_factory):
    """A ctflow server per backend, shared by the tests of the session."""
    workdir = str(tmp_path_factory.mktemp(f"ctflow-{request.param}"))
    uri = backend_uri(request, workdir)
    srv = CtflowServer(ctflow_bin, uri, workdir)
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


class CtflowUp:
    """`ctflow up`: server, controller and workers in one process, in its own data folder."""

    def __init__(self, binary, workdir, backend_uri=None, pipelines_dir=None, workers=2, extra=(), port=None,
                 env=None):
        self.binary = binary
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pipelines_dir = Path(pipelines_dir or self.workdir / "pipelines")
        self.pipelines_dir.mkdir(parents=True, exist_ok=True)
        self.backend_uri = backend_uri or f"sqlite:///{self.workdir}/ctflow.db"
        self.workers = workers
        self.extra = list(extra)
        self.env = dict(env or {})
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log_path = self.workdir / f"up-{self.starts}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        # The test projects use the local environment: this venv's python with mlflow.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.setdefault("CTFLOW_LOG", "info")
        env["CTFLOW_E2E_WEBHOOK_SECRET"] = "e2e-secret"
        env.update(self.env)
        self.proc = subprocess.Popen(
            [self.binary, "up", "--port", str(self.port), "--backend-store-uri", self.backend_uri,
             "--artifacts-destination", str(self.workdir / "artifacts"), "--logs-dir", str(self.workdir / "logs"),
             "--pipelines", str(self.pipelines_dir), "--workers", str(self.workers), *self.extra],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
        wait_healthy(self.url, self.proc, timeout=60)
        return self

    def kill(self):
        """SIGKILL the ctflow process only: its jobs' process groups live on, as after a crash."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)
        if self.proc is not None:
            self.log.close()
