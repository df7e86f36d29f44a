"""The hardening issue's load test, bounded for the suite: 64 clients log metrics and
params through log-batch against SQLite and against PostgreSQL; every acknowledged point
is in the store (count and checksum), nothing else is, the server answered no 5xx, and its
memory stayed bounded. bench/load_no_loss.py runs it longer (docs/security.md)."""
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load_no_loss.py"


def test_64_clients_lose_no_acknowledged_write(server):
    done = subprocess.run([sys.executable, str(BENCH), "--url", server.url, "--pid", str(server.proc.pid),
                           "--clients", "64", "--seconds", "8", "--max-rss-mib", "512"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["acknowledged_points"] > 1000, report
    assert set(report["statuses"]) == {"200"}, report
