"""64 concurrent clients log metrics and params through `runs/log-batch` for a bounded
time; afterwards every acknowledged point must be in the store (count and checksum per
run), nothing may be there that was never sent, the server must have answered no 5xx, and
its memory must have stayed bounded.

    python bench/load_no_loss.py --url http://127.0.0.1:5000 --pid <server pid> --seconds 60

Prints one JSON line; exits 1 when a check fails. The end-to-end suite runs it for a few
seconds against SQLite and PostgreSQL (tests/e2e/test_load.py)."""
import argparse
import hashlib
import http.client
import json
import sys
import threading
import time
import urllib.parse

METRICS_PER_BATCH = 20
KEYS = ("loss", "accuracy", "lr")


def value_of(client, seq, i):
    # Deterministic and distinct, so the store's copy can be checked value by value.
    return round(client * 1_000_000 + seq * 100 + i + 0.25, 2)


def checksum(points):
    digest = hashlib.sha256()
    for point in sorted(points):
        digest.update(repr(point).encode())
    return digest.hexdigest()


class Client(threading.Thread):
    def __init__(self, n, url, experiment_id, deadline):
        super().__init__()
        self.n, self.deadline = n, deadline
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.experiment_id = experiment_id
        self.acked, self.sent = set(), set()
        self.acked_params, self.sent_params = {}, {}
        self.statuses = {}
        self.run_id = None

    def call(self, conn, path, body):
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        return response.status, data

    def run(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        status, data = self.call(conn, "/api/2.0/mlflow/runs/create",
                                 {"experiment_id": self.experiment_id, "run_name": f"load-{self.n}"})
        if status != 200:
            return
        self.run_id = json.loads(data)["run"]["info"]["run_id"]
        seq = 0
        while time.monotonic() < self.deadline:
            seq += 1
            points = [(KEYS[i % len(KEYS)], seq * METRICS_PER_BATCH + i, value_of(self.n, seq, i))
                      for i in range(METRICS_PER_BATCH)]
            params = {f"p{seq}": str(value_of(self.n, seq, 0))}
            self.sent.update(points)
            self.sent_params.update(params)
            body = {
                "run_id": self.run_id,
                "metrics": [{"key": k, "value": v, "timestamp": 1_700_000_000_000 + step, "step": step}
                            for k, step, v in points],
                "params": [{"key": k, "value": v} for k, v in params.items()],
            }
            try:
                status, _ = self.call(conn, "/api/2.0/mlflow/runs/log-batch", body)
            except (OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                continue
            if status == 200:
                self.acked.update(points)
                self.acked_params.update(params)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stored_points(url, run_id):
    from mlflow import MlflowClient
    client = MlflowClient(url)
    points = set()
    for key in KEYS:
        points.update((key, m.step, m.value) for m in client.get_metric_history(run_id, key))
    return points, client.get_run(run_id).data.params


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, help="the server's process, for its memory")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-rss-mib", type=float, default=1024)
    parser.add_argument("--allow-unavailable", action="store_true",
                        help="503 answers are expected (the database is restarted meanwhile)")
    args = parser.parse_args()

    conn = http.client.HTTPConnection(urllib.parse.urlparse(args.url).hostname,
                                      urllib.parse.urlparse(args.url).port, timeout=60)
    conn.request("POST", "/api/2.0/mlflow/experiments/create",
                 json.dumps({"name": f"load-{time.time_ns()}"}), {"Content-Type": "application/json"})
    experiment_id = json.loads(conn.getresponse().read())["experiment_id"]

    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            if args.pid and (kib := rss_kib(args.pid)) is not None:
                samples.append(kib)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    clients = [Client(n, args.url, experiment_id, started + args.seconds) for n in range(args.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    took = time.monotonic() - started
    stop.set()
    sampler.join()

    statuses, missing, unexpected, param_errors = {}, 0, 0, 0
    acked_points = sum(len(c.acked) for c in clients)
    for c in clients:
        for status, count in c.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
        if c.run_id is None:
            continue
        stored, params = stored_points(args.url, c.run_id)
        missing += len(c.acked - stored)
        unexpected += len(stored - c.sent)
        if checksum(c.acked & stored) != checksum(c.acked):
            missing += 1
        param_errors += sum(1 for k, v in c.acked_params.items() if params.get(k) != v)
        param_errors += sum(1 for k in params if k not in c.sent_params)
    report = {
        "clients": args.clients, "seconds": round(took, 1),
        "acknowledged_points": acked_points,
        "points_per_second": round(acked_points / took),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "missing": missing, "unexpected": unexpected, "param_errors": param_errors,
        "rss_mib_start": round(samples[0] / 1024, 1) if samples else None,
        "rss_mib_peak": round(max(samples) / 1024, 1) if samples else None,
        "rss_mib_end": round(samples[-1] / 1024, 1) if samples else None,
    }
    print(json.dumps(report), flush=True)
    failures = []
    allowed = {503} if args.allow_unavailable else set()
    if any(s >= 500 and s not in allowed for s in statuses):
        failures.append("the server answered 5xx")
    if missing or unexpected or param_errors:
        failures.append("the store does not hold exactly the acknowledged writes")
    if acked_points == 0:
        failures.append("nothing was acknowledged")
    if samples and max(samples) / 1024 > args.max_rss_mib:
        failures.append(f"the server's memory went above {args.max_rss_mib} MiB")
    if failures:
        print("; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
