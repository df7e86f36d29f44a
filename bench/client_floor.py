#!/usr/bin/env python3
"""How much of a search's time, as the REST benchmark measures it, is its own client's.

The benchmark (`../shared/bench/mlflow_bench.py`) times a search as its `Mlflow.call`: the
request's JSON encoded, the HTTP exchange on a keep-alive connection, and the answer
decoded with `json.loads`. This script makes the same calls through that same class against
a store the benchmark filled (`--scenarios search,registry`: 10k runs in one experiment, 10
models of 100 versions), and for each call also times its two client-side parts apart:

    exchange  the request sent and the answer read whole, not decoded
    decode    json.loads of that answer's bytes

    static    the same bytes fetched again as a stored artifact (uploaded once through
              the artifact API): the exchange of an answer of that size from a server
              with nothing to compute

with the garbage collector on, as in the benchmark. Each round makes the four measurements
one after the other, so a noisy neighbour falls on all of them alike. Prints one JSON line
per case: p50 of each part over --calls calls and the answer's size. `static` plus `decode`
is what the benchmark would measure against a server that found the answer in no time.

    python3 bench/client_floor.py --url http://127.0.0.1:5000 --experiment 2 \\
        --model-prefix bench-ID-model
"""
import argparse
import json
import time
import urllib.parse

from bench_support import MLFLOW_BENCH, load_mlflow_bench


def p50(values):
    values = sorted(values)
    return round(values[len(values) // 2] * 1000, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--model-prefix", required=True)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--bench", default=MLFLOW_BENCH)
    args = ap.parse_args()
    bench = load_mlflow_bench(args.bench)
    client = bench.Mlflow(args.url)
    like = urllib.parse.urlencode({"filter": f"name LIKE '{args.model_prefix}-%'",
                                   "max_results": 10000})
    cases = {
        # The benchmark's `nofilter_first_page_100`.
        "runs_search_nofilter_100": (
            lambda: client.search_runs([args.experiment], "", None, 100),
            lambda: client.request(
                "POST", bench.API + "/runs/search",
                body=json.dumps({"experiment_ids": [args.experiment],
                                 "max_results": 100}).encode(),
                headers=bench.Mlflow.JSON),
        ),
        # The benchmark's `search_versions_all_like`.
        "model_versions_search_like": (
            lambda: client.call("GET", "/model-versions/search?" + like),
            lambda: client.request("GET", bench.API + "/model-versions/search?" + like),
        ),
    }
    for name, (bench_call, exchange) in cases.items():
        status, body = exchange()
        if status != 200:
            raise SystemExit(f"{name}: HTTP {status}: {body[:200]!r}")
        stored = f"client-floor/{name}.json"
        client.put_artifact(stored, body)
        whole, exchanged, decoded, static, size = [], [], [], [], 0
        for _ in range(args.calls):
            t0 = time.perf_counter()
            bench_call()
            t1 = time.perf_counter()
            status, body = exchange()
            t2 = time.perf_counter()
            json.loads(body)
            t3 = time.perf_counter()
            fetched = client.request("GET", bench.ART_API + "/" + stored)
            t4 = time.perf_counter()
            if status != 200 or fetched != (200, body):
                raise SystemExit(f"{name}: HTTP {status} / {fetched[0]}")
            whole.append(t1 - t0)
            exchanged.append(t2 - t1)
            decoded.append(t3 - t2)
            static.append(t4 - t3)
            size = len(body)
        print(json.dumps({"case": name, "calls": args.calls, "answer_bytes": size,
                          "bench_call_p50_ms": p50(whole), "exchange_p50_ms": p50(exchanged),
                          "decode_p50_ms": p50(decoded), "static_p50_ms": p50(static)}),
              flush=True)


if __name__ == "__main__":
    main()
