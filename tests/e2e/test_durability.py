"""The durability promise: a write that got its 200 is on disk. By default (`--durability
full`) SQLite fsyncs the commit's WAL frames before the server answers; with `--durability
relaxed` it does not (a power cut or an OS crash can then lose the last acknowledged
writes; a crash of ctflow alone cannot).

What this shows and what it does not: the server runs under strace, which records the
system calls between reading the log-batch request and writing its 200. The test checks
that the commit's frames were written to the WAL and that the WAL was fsynced (fsync or
fdatasync on it) in between. That is the mechanism a power cut tests; it does not cut
power, so it does not show that the disk honours the flush (a drive's volatile cache, a
hypervisor that ignores flushes) -- no test on this machine can."""
import json
import shutil
import subprocess
import urllib.request

import pytest

from support import free_port, stop, wait_healthy

pytestmark = pytest.mark.skipif(shutil.which("strace") is None,
                                reason="strace is not installed (scripts/setup installs it)")


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def syscalls_of_one_log_batch(ctflow_bin, tmp_path, extra):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    trace = tmp_path / "trace.txt"
    proc = subprocess.Popen(
        ["strace", "-f", "-y", "-s", "96", "-o", str(trace),
         "-e", "trace=read,recvfrom,pwrite64,write,writev,sendto,sendmsg,fsync,fdatasync",
         ctflow_bin, "server", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/ctflow.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), *extra],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(url, proc, timeout=60)
        run_id = post(url, "/api/2.0/mlflow/runs/create", {"experiment_id": "0"})["run"]["info"]["run_id"]
        post(url, "/api/2.0/mlflow/runs/log-batch",
             {"run_id": run_id, "metrics": [{"key": "acknowledged", "value": 1, "timestamp": 1, "step": 0}]})
    finally:
        stop(proc)
    lines = trace.read_text(errors="replace").splitlines()
    start = next(i for i, line in enumerate(lines) if "POST /api/2.0/mlflow/runs/log-batch" in line)
    end = next(i for i, line in enumerate(lines) if i > start and '"HTTP/1.1 200' in line)
    return lines[start:end]


def wal(lines, *calls):
    return [line for line in lines if "-wal>" in line and any(f"{call}(" in line for call in calls)]


def test_a_commit_is_fsynced_before_the_200_by_default(ctflow_bin, tmp_path):
    between = syscalls_of_one_log_batch(ctflow_bin, tmp_path, [])
    assert wal(between, "pwrite64"), "\n".join(between)
    assert wal(between, "fsync", "fdatasync"), "no fsync of the WAL before the answer:\n" + "\n".join(between)


def test_relaxed_durability_answers_before_the_fsync(ctflow_bin, tmp_path):
    between = syscalls_of_one_log_batch(ctflow_bin, tmp_path, ["--durability", "relaxed"])
    assert wal(between, "pwrite64"), "\n".join(between)
    assert not wal(between, "fsync", "fdatasync"), "\n".join(between)
