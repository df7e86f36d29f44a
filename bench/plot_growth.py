#!/usr/bin/env python3
"""Draws the sustained-ingest curves of `bench/sustained_ingest.py OUT_DIR` into a PNG:
throughput and batch p99 per minute, server memory and WAL size over time, and the probe's
search / history / chart-sampling latency against the number of points in the store.

    python3 bench/plot_growth.py OUT_DIR docs/sustained-ingest.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    out_dir, png = sys.argv[1], sys.argv[2]
    requests = rows(f"{out_dir}/requests.jsonl")
    probes = rows(f"{out_dir}/probe.jsonl")
    server = rows(f"{out_dir}/server.jsonl")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    minutes = [r["minute"] + 1 for r in requests]
    ax = axes[0][0]
    ax.plot(minutes, [r["points_per_s"] for r in requests], marker="o")
    ax.set_title("log-batch throughput per minute")
    ax.set_xlabel("minute")
    ax.set_ylabel("points/s")
    ax.set_ylim(bottom=0)
    ax = axes[0][1]
    ax.plot(minutes, [r["p99_ms"] for r in requests], marker="o", label="p99")
    ax.plot(minutes, [r["p50_ms"] for r in requests], marker="o", label="p50")
    ax.set_title("log-batch latency per minute")
    ax.set_xlabel("minute")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax = axes[1][0]
    t0 = server[0]["t"] if server else 0
    ax.plot([(s["t"] - t0) / 60 for s in server], [s["rss_mb"] for s in server], label="server RSS")
    ax.plot([(s["t"] - t0) / 60 for s in server], [s["wal_mb"] for s in server], label="WAL file")
    ax.set_title("memory and WAL over time")
    ax.set_xlabel("minute")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax = axes[1][1]
    points = [p["points"] / 1e6 for p in probes]
    for name, label in (("search_ms", "search, filtered + ordered"), ("history_100k_ms", "history, 100k points"),
                        ("bulk_interval_320_ms", "chart sampling, 320 of 100k")):
        ax.plot(points, [p[name] for p in probes], marker=".", label=label)
    ax.set_title("reads while the store grows")
    ax.set_xlabel("million points in the store")
    ax.set_ylabel("ms (client wall time)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()
