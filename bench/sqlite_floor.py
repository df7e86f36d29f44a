#!/usr/bin/env python3
"""The SQLite floor for metric ingest: how fast SQLite itself takes the rows that one
log-batch of the REST benchmark carries (1000 metrics: 10 keys x 100 steps), one
transaction per batch, with ctflow's pragmas (WAL, synchronous FULL by default as ctflow's
default durability). No HTTP, no JSON, no server: the C library driven by executemany.

NB: Python's own per-row cost (a tuple converted and bound per row) is most of what this
measures. The floor from Rust through the C interface, beside the store's own rate, is the
store bench's `floor` part (`CTFLOW_BENCH_ONLY=floor cargo bench -p ctflow-store --bench
store`); docs/benchmarks.md has both.

Three schemas, measured in the same run, each with the latest value's upsert for the
batch's ten series:
- `blocks`: today's table (migration 19): a row per series per batch, its 100 points
  packed in a blob as the store packs them;
- `points`: the narrow table before it (migration 16): five integers per point, keyed by
  the series id;
- `wide`: the table before that (migration 1's `metrics`: 32-character run id and key text
  in a six-column key).

    python3 bench/sqlite_floor.py --batches 200 --out floor.jsonl
"""
import argparse
import json
import os
import sqlite3
import struct
import tempfile
import time
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[1] / "crates/ctflow-store/migrations/sqlite"
WIDE_TABLE = """CREATE TABLE metrics (
    run_uuid TEXT NOT NULL, key TEXT NOT NULL, timestamp BIGINT NOT NULL, step BIGINT NOT NULL,
    value REAL NOT NULL, is_nan BIGINT NOT NULL, value_bits BIGINT NOT NULL,
    model_id TEXT, dataset_name TEXT, dataset_digest TEXT,
    PRIMARY KEY (run_uuid, key, timestamp, step, value, is_nan)) WITHOUT ROWID"""


# Migration 19's table, written out: its data move needs a newer SQLite than Python's.
BLOCK_TABLE = """CREATE TABLE metric_blocks (
    block_id INTEGER PRIMARY KEY, series_id BIGINT NOT NULL, first_step BIGINT NOT NULL,
    last_step BIGINT NOT NULL, points BLOB NOT NULL);
CREATE INDEX metric_blocks_by_steps ON metric_blocks (series_id, first_step, last_step);"""


def bits(value):
    return struct.unpack("<q", struct.pack("<d", value))[0]


def order_key(value):
    b = bits(value)
    return (~b) | -(1 << 63) if b < 0 else b


def batches(n, ts0):
    out = []
    for b in range(n):
        rows = []
        for key in range(10):
            for step in range(100):
                s = b * 100 + step
                rows.append((key, ts0 + s, s, float(s) * 0.5))
        out.append(rows)
    return out


def measure(schema, n, synchronous):
    run_id = "0" * 32
    ts0 = int(time.time() * 1000)
    work = batches(n, ts0)
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        if schema == "wide":
            db.execute(WIDE_TABLE)
        else:
            for migration in sorted(MIGRATIONS.glob("*.sql")):
                if int(migration.name[:4]) <= 18:
                    db.executescript(migration.read_text())
            if schema == "blocks":
                db.executescript(BLOCK_TABLE)
            db.executemany(
                "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits, series_id) "
                "VALUES (?, ?, 0, 0, 0, 0, 0, ?)",
                [(run_id, f"m{key}", key + 1) for key in range(10)],
            )
        # The statements' parameters are built before the clock starts: only SQLite is timed.
        if schema == "wide":
            prepared = [([(run_id, f"m{k}", ts, s, v, bits(v)) for k, ts, s, v in rows], []) for rows in work]
        elif schema == "blocks":
            prepared = []
            for rows in work:
                by_series = {}
                for k, ts, s, v in rows:
                    by_series.setdefault(k + 1, []).append((s, ts, order_key(v)))
                blocks = [
                    (series, min(p[0] for p in points), max(p[0] for p in points),
                     b"".join(struct.pack(">qqqB", s, ts, key, 0) for s, ts, key in sorted(points)))
                    for series, points in by_series.items()
                ]
                latest = [(run_id, f"m{k}", v, ts, s, bits(v), k + 1) for k, ts, s, v in rows[-10:]]
                prepared.append((blocks, latest))
        else:
            prepared = [
                (
                    [(k + 1, ts, s, order_key(v)) for k, ts, s, v in rows],
                    [(run_id, f"m{k}", v, ts, s, bits(v), k + 1) for k, ts, s, v in rows[-10:]],
                )
                for rows in work
            ]
        started = time.perf_counter()
        for points, latest in prepared:
            db.execute("BEGIN IMMEDIATE")
            if schema == "wide":
                db.executemany(
                    "INSERT INTO metrics (run_uuid, key, timestamp, step, value, is_nan, value_bits, model_id, dataset_name, dataset_digest) "
                    "VALUES (?, ?, ?, ?, ?, 0, ?, NULL, NULL, NULL) ON CONFLICT DO NOTHING",
                    points,
                )
            else:
                if schema == "blocks":
                    db.executemany(
                        "INSERT INTO metric_blocks (series_id, first_step, last_step, points) "
                        "VALUES (?, ?, ?, ?)",
                        points,
                    )
                else:
                    db.executemany(
                        "INSERT INTO metric_points (series_id, timestamp, step, value_key, is_nan) "
                        "VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
                        points,
                    )
                db.executemany(
                    "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits, series_id) "
                    "VALUES (?, ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value, "
                    "timestamp = excluded.timestamp, step = excluded.step, value_bits = excluded.value_bits",
                    latest,
                )
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
    return n * 1000 / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    ap.add_argument("--out")
    args = ap.parse_args()
    for schema in ("blocks", "points", "wide"):
        results = sorted(measure(schema, args.batches, args.synchronous) for _ in range(args.reps))
        record = {
            "scenario": "sqlite_floor",
            "schema": schema,
            "synchronous": args.synchronous,
            "sqlite_version": sqlite3.sqlite_version,
            "points_per_batch": 1000,
            "batches": args.batches,
            "points_per_s_reps": [round(r) for r in results],
            "points_per_s": round(results[len(results) // 2]),
        }
        print(json.dumps(record))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
