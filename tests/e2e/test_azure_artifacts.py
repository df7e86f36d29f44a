"""Artifacts on Azure Blob Storage: `ctflow server --artifacts-destination az://container/prefix`
against Azurite (Microsoft's emulator, from npm, installed by scripts/setup into tests/node). The
mlflow client only talks to the server; azure-storage-blob reads the container directly."""
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from support import REPO, CtflowServer, free_port, stop, wait_for

AZURITE = REPO / "tests" / "node" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "mlflow"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    if not AZURITE.exists():
        raise RuntimeError(f"{AZURITE} is missing: scripts/setup installs it (npm ci in tests/node)")
    workdir = tmp_path_factory.mktemp("azurite")
    port = free_port()
    log = open(workdir / "azurite.log", "wb")
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(workdir), "--skipApiVersionCheck", "--silent"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def listening():
        try:
            urllib.request.urlopen(f"{url}/{ACCOUNT}?comp=list", timeout=2)
        except urllib.error.HTTPError:
            return True  # it answers (unsigned requests are refused)
        except OSError:
            return False
        return True

    wait_for("Azurite to listen", listening, timeout=60, interval=0.1)
    from azure.storage.blob import BlobServiceClient
    service = BlobServiceClient(account_url=f"{url}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY})
    service.create_container(CONTAINER)
    yield url, service.get_container_client(CONTAINER)
    stop(proc)
    log.close()


@pytest.fixture(scope="module")
def azure_server(ctflow_bin, tmp_path_factory, azurite):
    url, _ = azurite
    env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url}
    workdir = str(tmp_path_factory.mktemp("ctflow-azure"))
    server = CtflowServer(ctflow_bin, f"sqlite:///{workdir}/ctflow.db", workdir,
                          artifacts=f"az://{CONTAINER}/artifacts", env=env)
    yield server
    server.stop()


def test_artifacts_live_in_the_container_and_the_server_proxies_them(azure_server, azurite, tmp_path):
    _, container = azurite
    client = MlflowClient(azure_server.url)
    experiment_id = client.create_experiment("azure-artifacts")
    run = client.create_run(experiment_id)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(9 * 1024 * 1024))  # two upload blocks
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    client.log_artifact(run.info.run_id, str(weights), "model")
    client.set_terminated(run.info.run_id)
    prefix = f"artifacts/{experiment_id}/{run.info.run_id}/artifacts"
    blobs = {b.name: b.size for b in container.list_blobs(name_starts_with="artifacts/")}
    assert blobs == {f"{prefix}/notes/hello.txt": 5, f"{prefix}/model/weights.bin": weights.stat().st_size}
    assert {(f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id)} == {("notes", True), ("model", True)}
    out = client.download_artifacts(run.info.run_id, "model/weights.bin", str(tmp_path / "down"))
    assert Path(out).read_bytes() == weights.read_bytes()
    delete = urllib.request.Request(
        f"{azure_server.url}/api/2.0/mlflow-artifacts/artifacts/{prefix.split('/', 1)[1]}/model", method="DELETE")
    with urllib.request.urlopen(delete, timeout=10) as r:
        assert r.status == 200
    assert [b.name for b in container.list_blobs(name_starts_with="artifacts/")] == [f"{prefix}/notes/hello.txt"]


def test_an_unsupported_destination_is_refused_at_start(ctflow_bin, tmp_path):
    result = subprocess.run([ctflow_bin, "server", "--port", str(free_port()),
                             "--backend-store-uri", f"sqlite:///{tmp_path}/db.sqlite",
                             "--artifacts-destination", "gs://bucket/prefix"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unsupported artifacts destination 'gs://bucket/prefix'" in result.stderr, result.stderr
