"""Processes the end-to-end tests start and wait for: free loopback ports, readiness
waits, a throw-away PostgreSQL cluster, `ctflow server` and `ctflow up`, and a loopback
JSON server standing in for a service that cannot run here."""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
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


def service_env():
    """The environment of a ctflow process under test: info logs, and this venv first on
    PATH, so test projects run with its python (and mlflow)."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("CTFLOW_LOG", "info")
    return env


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(what, predicate, timeout=180, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def wait_serving(url, proc=None, log=None, timeout=180):
    """Waits until a scoring server at `url` answers /ping with 200 (a served model is
    loaded); fails at once with its log when its process `proc` died."""
    import urllib.request

    def ping():
        if proc is not None:
            assert proc.poll() is None, open(log).read() if log else "the scoring server exited"
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for("the model served", ping, timeout=timeout)


def _pg_tool(name):
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL tool {name} not found; scripts/setup installs PostgreSQL")
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


class CtflowServer:
    def __init__(self, binary, backend_uri, workdir, extra=(), artifacts=None, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.backend_uri = backend_uri
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
        env = service_env()
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


def backend_uri(request, workdir):
    """A fresh store for a fixture parametrised by backend: a SQLite file in `workdir`, or
    a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/ctflow.db"
    return request.getfixturevalue("postgres").new_database()


def scrape(url):
    """`/metrics` as {series: value}, e.g. 'ctflow_queue_depth' or 'ctflow_pipeline_runs{...}'."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    assert text.endswith("# EOF\n")
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    return series


class JsonPostServer:
    """A loopback HTTP server answering each POST with `answer(path, body)` as JSON, for
    services no real instance of can run here (an LLM provider, a deployments server).
    `calls` records each request: path, Authorization header and JSON body."""

    def __init__(self, answer):
        self.calls = []
        calls = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                              "body": body})
                reply = json.dumps(answer(self.path, body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self):
        self.server.shutdown()
