#!/usr/bin/env python3
"""The SQLite floor for metric ingest: how fast SQLite itself inserts the rows that one
log-batch of the REST benchmark carries (1000 metrics: 10 keys x 100 steps), into ctflow's
own schema, with ctflow's pragmas (WAL, synchronous=NORMAL), one transaction per batch.
No HTTP, no JSON, no server: the C library driven by executemany.

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

SCHEMA = Path(__file__).resolve().parents[1] / "crates/ctflow-store/migrations/sqlite/0001_tracking.sql"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    results = []
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory() as d:
            db = sqlite3.connect(os.path.join(d, "floor.db"), isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(SCHEMA.read_text())
            run_id = "0" * 32
            ts0 = int(time.time() * 1000)
            batches = []
            for b in range(args.batches):
                rows = []
                for key in range(10):
                    for step in range(100):
                        s = b * 100 + step
                        value = float(s) * 0.5
                        bits = struct.unpack("<q", struct.pack("<d", value))[0]
                        rows.append((run_id, f"m{key}", ts0 + s, s, value, 0, bits, None, None, None))
                batches.append(rows)
            started = time.perf_counter()
            for rows in batches:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO metrics (run_uuid, key, timestamp, step, value, is_nan, value_bits, model_id, dataset_name, dataset_digest) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    rows,
                )
                db.execute("COMMIT")
            elapsed = time.perf_counter() - started
            points = args.batches * 1000
            results.append(points / elapsed)
            db.close()
    results.sort()
    record = {
        "scenario": "sqlite_floor",
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
