#!/usr/bin/env python3
"""Server-side cost of search pages: one keep-alive HTTP connection, no MLflow client, so
the figure is the server's answer (request to last byte) and not the client's decoding.

Against a store the REST benchmark filled (`mlflow_bench.py --scenarios search,registry`:
10k runs in one experiment, 10 models of 100 versions), e.g. two builds in turn on one copy
of that store:

    for b in old new; do ctflow-$b server --port 5999 --backend-store-uri sqlite:///$DB & ...
        python3 bench/page_reads_ab.py --port 5999 --experiment 2 --model-prefix bench-ID-model
    done

Prints the p50 and minimum of --calls calls per case (docs/benchmarks.md, 2026-12-04).
"""
import argparse
import http.client
import json
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--model-prefix", required=True)
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    api = "/api/2.0/mlflow"
    query = urllib.parse.urlencode
    cases = {
        "nofilter": ("POST", f"{api}/runs/search",
                     {"experiment_ids": [args.experiment], "max_results": 100}),
        "filtered": ("POST", f"{api}/runs/search",
                     {"experiment_ids": [args.experiment], "max_results": 100,
                      "filter": "metrics.m1 > 0.5 and params.p1 = 'v3'",
                      "order_by": ["metrics.m1 DESC"]}),
        "like": ("GET", f"{api}/model-versions/search?" + query(
            {"filter": f"name LIKE '{args.model_prefix}-%'", "max_results": 10000}), None),
        "rm_like": ("GET", f"{api}/registered-models/search?" + query(
            {"filter": f"name LIKE '{args.model_prefix}-%'", "max_results": 100}), None),
        "byname": ("GET", f"{api}/model-versions/search?" + query(
            {"filter": f"name = '{args.model_prefix}-3'", "max_results": 1000}), None),
    }
    connection = http.client.HTTPConnection("127.0.0.1", args.port)
    for name, (method, path, body) in cases.items():
        payload = json.dumps(body) if body is not None else None
        latencies = []
        for _ in range(args.calls):
            started = time.perf_counter()
            connection.request(method, path, body=payload,
                               headers={"content-type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise SystemExit(f"{name}: HTTP {response.status}: {data[:200]!r}")
        latencies.sort()
        print(f"{name:10s} p50 {latencies[len(latencies) // 2]:.2f} ms  "
              f"min {latencies[0]:.2f}  bytes {len(data)}")


if __name__ == "__main__":
    main()
