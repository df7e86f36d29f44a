#!/usr/bin/env python3
"""A long metric history read page by page over REST, as the MLflow client reads it
(`get-history` with `max_results`, following `next_page_token`), against one or more
servers started fresh, one after the other.

Per server and history length it reports, as the median of `--reps` reads:
- `server_ms`: the sum over the pages of the time to the first byte of each answer (the
  server builds the whole page before it sends the first byte, so this is the server's
  time plus one loopback round trip a page);
- `first_page_ms` and `last_page_ms`: the first and the deepest page alone. A server that
  finds a page by counting off the points before it pays more for each page than the one
  before; one that seeks to where the previous page ended pays the same for each.

    python3 bench/history_pages.py --server old=/tmp/ctflow-old --server new=target/release/ctflow \\
        --points 100000,1000000 --page 25000 --out history_pages.jsonl

`--server NAME=BINARY` starts `BINARY server` on a loopback port with a SQLite store in a
temporary folder, with ctflow's command line (`--backend-store-uri`,
`--default-artifact-root`); it compares ctflow builds with each other.
"""
import argparse
import json
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body):
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())


def wait_healthy(base, server):
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(base + "/health"):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server never became healthy")


def log_series(base, run_id, points):
    t0 = 1_764_800_000_000
    for start in range(0, points, 1000):
        metrics = [
            {"key": "loss", "value": 1.0 / (1 + i) + 0.123456789, "timestamp": t0 + i * 3, "step": i}
            for i in range(start, min(points, start + 1000))
        ]
        post(base, "/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "metrics": metrics})


def time_to_first_byte(url):
    """Seconds to the answer's first byte and the decoded answer (curl keeps the client out
    of the figure)."""
    with tempfile.NamedTemporaryFile() as body:
        timing = subprocess.run(
            ["curl", "-sS", "-o", body.name, "-w", "%{time_starttransfer}", url],
            capture_output=True, text=True, check=True,
        ).stdout
        return float(timing), json.load(open(body.name))


def read_pages(base, run_id, page):
    url = f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss&max_results={page}"
    token, times, points = None, [], 0
    while True:
        seconds, answer = time_to_first_byte(url + (f"&page_token={token}" if token else ""))
        times.append(seconds * 1000)
        points += len(answer.get("metrics", []))
        token = answer.get("next_page_token")
        if not token:
            return times, points


def measure(name, binary, lengths, page, reps):
    records = []
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [binary, "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder}/store.db",
             "--default-artifact-root", f"{folder}/artifacts"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(base, server)
            experiment = post(base, "/api/2.0/mlflow/experiments/create", {"name": "history"})
            for length in lengths:
                run = post(base, "/api/2.0/mlflow/runs/create",
                           {"experiment_id": experiment["experiment_id"]})["run"]["info"]["run_id"]
                log_series(base, run, length)
                read_pages(base, run, page)  # warm the page cache
                reads = [read_pages(base, run, page) for _ in range(reps)]
                assert all(points == length for _, points in reads), "a page went missing"
                records.append({
                    "server": name, "points": length, "page": page, "pages": len(reads[0][0]),
                    "server_ms": round(statistics.median(sum(t) for t, _ in reads), 1),
                    "first_page_ms": round(statistics.median(t[0] for t, _ in reads), 1),
                    "last_page_ms": round(statistics.median(t[-1] for t, _ in reads), 1),
                    "reps": reps,
                })
                print(json.dumps(records[-1]), flush=True)
        finally:
            server.terminate()
            server.wait()
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="append", required=True, help="NAME=BINARY")
    parser.add_argument("--points", default="100000", help="history lengths, comma-separated")
    parser.add_argument("--page", type=int, default=25000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1,
                        help="servers measured in turn this many times (interleaved A/B)")
    parser.add_argument("--out")
    args = parser.parse_args()
    lengths = [int(n) for n in args.points.split(",")]
    servers = [spec.split("=", 1) for spec in args.server]
    records = []
    for _ in range(args.rounds):
        for name, binary in servers:
            records += measure(name, binary, lengths, args.page, args.reps)
    if args.out:
        with open(args.out, "a") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
