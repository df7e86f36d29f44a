"""What the end-to-end tests share, imported as `from support import ...`: processes and
readiness waits (processes.py), the CT API and test pipelines (ct.py), the distributed
services and nats-server (cluster.py). Test modules import from here, never from each
other; conftest.py holds only fixtures and markers."""
from support.cluster import NATS_SERVER, NatsServer, Service
from support.ct import (DEFAULT_GATES, IRIS, TERMINAL, api, champion_version, describe, drift_checks, install,
                        iris_pipeline, runs_of, sleeper_pipeline, sleeper_project, trigger, wait_phase)
from support.processes import (REPO, CtflowServer, CtflowUp, JsonPostServer, TempPostgres, backend_uri, free_port, scrape,
                               stop, wait_for, wait_healthy, wait_serving)

__all__ = [
    "CtflowServer", "CtflowUp", "DEFAULT_GATES", "JsonPostServer", "IRIS", "NATS_SERVER", "NatsServer", "REPO", "Service",
    "TERMINAL", "TempPostgres", "api", "backend_uri", "champion_version", "describe", "drift_checks", "free_port", "install",
    "iris_pipeline", "runs_of", "scrape", "sleeper_pipeline", "sleeper_project", "stop", "trigger", "wait_for",
    "wait_healthy", "wait_phase", "wait_serving",
]
