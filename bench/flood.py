"""Floods a ctflow server the way an attacker would, while a well-behaved client keeps
using it, and reports the server's memory and what the well-behaved client saw.

    # wrong HTTP Basic passwords from many addresses (a server started with --auth)
    python bench/flood.py passwords --url http://127.0.0.1:5000 --pid <server pid> \
        --token <an API token> --clients 100 --seconds 60
    # idle connections, reopened as soon as the server closes them
    python bench/flood.py idle --url http://127.0.0.1:5000 --pid <server pid> \
        --connections 2000 --addresses 1 --seconds 60

Attackers connect from 127.0.0.2 and up (every 127/8 address is this machine), the
well-behaved client from 127.0.0.1: an API call (with --token when given) and /health
every 100 ms, each on a fresh connection. Prints one JSON line; exits 1 when the server's
memory went above --max-rss-mib or the well-behaved client got an answer other than 200.
The end-to-end suite runs it for a few seconds (tests/e2e/test_load.py); docs/security.md
has 60 s runs."""
import argparse
import base64
import http.client
import json
import selectors
import socket
import statistics
import sys
import threading
import time
import urllib.parse

from load_no_loss import rss_kib

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def attacker_address(n, addresses):
    return f"127.0.0.{2 + n % addresses}"


class SourceConnection(http.client.HTTPConnection):
    """An HTTP connection from a chosen loopback address."""

    def __init__(self, host, port, source, timeout=30):
        super().__init__(host, port, timeout=timeout, source_address=(source, 0))


def password_attacker(n, host, port, addresses, deadline, statuses, lock):
    credentials = base64.b64encode(f"user{n}:wrong-password-{n}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    conn = SourceConnection(host, port, attacker_address(n, addresses))
    while time.monotonic() < deadline:
        try:
            conn.request("GET", SEARCH, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.getheader("connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            status = "error"
            conn.close()
            conn = SourceConnection(host, port, attacker_address(n, addresses))
            time.sleep(0.05)
        with lock:
            statuses[str(status)] = statuses.get(str(status), 0) + 1


def idle_attacker(host, port, connections, addresses, deadline, counts):
    """Keeps `connections` sockets open and silent, reopening each one the server ends."""
    selector = selectors.DefaultSelector()

    def open_one(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((attacker_address(n, addresses), 0))
            sock.connect_ex((host, port))
        except OSError:
            sock.close()
            counts["open_failures"] += 1
            return
        selector.register(sock, selectors.EVENT_READ, n)
        counts["opened"] += 1

    for n in range(connections):
        open_one(n)
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 503"):
                counts["refused"] += 1
            selector.unregister(sock)
            sock.close()
            counts["closed_by_server"] += 1
            open_one(key.data)
    for key in list(selector.get_map().values()):
        key.fileobj.close()


def probe(host, port, path, headers):
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=30, source_address=("127.0.0.1", 0))
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as error:
        status = type(error).__name__
    finally:
        conn.close()
    return status, (time.monotonic() - started) * 1000


def summary(latencies):
    if not latencies:
        return None
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["passwords", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, help="the server's process, for its memory")
    parser.add_argument("--token", help="an API token for the well-behaved client")
    parser.add_argument("--clients", type=int, default=100, help="password attackers")
    parser.add_argument("--connections", type=int, default=2000, help="idle connections")
    parser.add_argument("--addresses", type=int, default=100, help="attacking addresses")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle-seconds", type=float, default=3,
                        help="how long after the flood the memory is sampled again")
    parser.add_argument("--max-rss-mib", type=float, default=1024)
    args = parser.parse_args()
    parsed = urllib.parse.urlparse(args.url)
    host, port = parsed.hostname, parsed.port

    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            if args.pid and (kib := rss_kib(args.pid)) is not None:
                samples.append(kib)
            time.sleep(0.25)

    rss_start = rss_kib(args.pid) if args.pid else None
    sampler = threading.Thread(target=sample)
    sampler.start()
    deadline = time.monotonic() + args.seconds
    statuses, lock = {}, threading.Lock()
    counts = {"opened": 0, "closed_by_server": 0, "refused": 0, "open_failures": 0}
    if args.mode == "passwords":
        attackers = [threading.Thread(target=password_attacker,
                                      args=(n, host, port, args.addresses, deadline, statuses, lock))
                     for n in range(args.clients)]
    else:
        attackers = [threading.Thread(target=idle_attacker,
                                      args=(host, port, args.connections, args.addresses, deadline, counts))]
    for attacker in attackers:
        attacker.start()

    api_headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    probes = {"api": ([], {}), "health": ([], {})}
    time.sleep(min(1.0, args.seconds / 4))  # the flood is under way
    while time.monotonic() < deadline:
        for name, path, headers in (("api", SEARCH, api_headers), ("health", "/health", {})):
            status, ms = probe(host, port, path, headers)
            latencies, seen = probes[name]
            latencies.append(ms)
            seen[str(status)] = seen.get(str(status), 0) + 1
        time.sleep(0.1)
    for attacker in attackers:
        attacker.join()
    time.sleep(args.settle_seconds)
    rss_end = rss_kib(args.pid) if args.pid else None
    stop.set()
    sampler.join()

    report = {
        "mode": args.mode,
        "seconds": args.seconds,
        "attack": statuses if args.mode == "passwords" else counts,
        "rss_mib_start": round(rss_start / 1024, 1) if rss_start else None,
        "rss_mib_peak": round(max(samples) / 1024, 1) if samples else None,
        "rss_mib_after": round(rss_end / 1024, 1) if rss_end else None,
    }
    for name, (latencies, seen) in probes.items():
        report[f"{name}_statuses"] = seen
        report[f"{name}_latency"] = summary(latencies)
    failures = []
    if samples and max(samples) / 1024 > args.max_rss_mib:
        failures.append(f"the server's memory went above {args.max_rss_mib} MiB")
    for name, (_, seen) in probes.items():
        if set(seen) != {"200"}:
            failures.append(f"the well-behaved client's {name} calls got {seen}")
    report["failures"] = failures
    print(json.dumps(report))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
