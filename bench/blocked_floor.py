#!/usr/bin/env python3
"""SQLite's own cost of the REST benchmark's log-batch pattern, a point per row (today's
`metric_points`) against a block of a series' points per row (the blocked table issue 25's
first item allows), with Python's `sqlite3` and no server.

The pattern: 8 runs of 10 series each, 1000-point batches (10 series x 100 steps) taking
turns between the runs, 5 batches a transaction (what ctflow's group commit gathers with 8
clients), each in its own savepoint, `synchronous = FULL` in WAL mode as ctflow's default.
The rows are built before the clock starts, so the figures are SQLite's. For each layout
and page size it prints points/s, the bytes the process sent to storage per point while
inserting (`/proc/self/io`: WAL frames and checkpoints) and the database file's size per
point once closed.

    python3 bench/blocked_floor.py [--dir /tmp] [--batches 400] [--rounds 2]
"""
import argparse
import json
import math
import os
import sqlite3
import struct
import time

from bench_support import storage_written_bytes

SERIES_PER_RUN = 10
STEPS_PER_BATCH = 100
BASE_TS = 1_796_377_167_117

LAYOUTS = {
    # ctflow's table since migration 16.
    "point_per_row": (
        "CREATE TABLE points (series_id INTEGER NOT NULL, timestamp INTEGER NOT NULL, "
        "step INTEGER NOT NULL, value_key INTEGER NOT NULL, is_nan INTEGER NOT NULL, "
        "PRIMARY KEY (series_id, step, timestamp, value_key, is_nan)) WITHOUT ROWID",
        5, STEPS_PER_BATCH * SERIES_PER_RUN,
    ),
    # One row per series per batch: its steps' (step, timestamp, value) packed.
    "block_per_row": (
        "CREATE TABLE points (series_id INTEGER NOT NULL, first_step INTEGER NOT NULL, "
        "last_step INTEGER NOT NULL, count INTEGER NOT NULL, points BLOB NOT NULL, "
        "PRIMARY KEY (series_id, first_step, last_step)) WITHOUT ROWID",
        5, SERIES_PER_RUN,
    ),
}


def value(step, key):
    return math.sin(step + key) * 0.5 + 0.5


def batch_rows(layout, run, first_step):
    rows = []
    if layout == "point_per_row":
        for step in range(first_step, first_step + STEPS_PER_BATCH):
            for key in range(SERIES_PER_RUN):
                bits = struct.unpack("<q", struct.pack("<d", value(step, key)))[0]
                rows += [run * SERIES_PER_RUN + key + 1, BASE_TS + step, step, bits, 0]
    else:
        last = first_step + STEPS_PER_BATCH - 1
        for key in range(SERIES_PER_RUN):
            packed = b"".join(struct.pack("<qqd", step, BASE_TS + step, value(step, key))
                              for step in range(first_step, last + 1))
            rows += [run * SERIES_PER_RUN + key + 1, first_step, last, STEPS_PER_BATCH, packed]
    return rows


def measure(directory, layout, page_size, batches, runs=8, per_transaction=5):
    path = os.path.join(directory, "blocked-floor.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size = {page_size}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA cache_size = -16384")
    create, width, per_batch = LAYOUTS[layout]
    db.execute(create)
    insert = ("INSERT INTO points VALUES " + ",".join(["(" + ",".join("?" * width) + ")"]
                                                       * per_batch) + " ON CONFLICT DO NOTHING")
    next_step = [0] * runs
    bodies = []
    for batch in range(batches):
        run = batch % runs
        bodies.append(batch_rows(layout, run, next_step[run]))
        next_step[run] += STEPS_PER_BATCH
    written, start = storage_written_bytes(), time.perf_counter()
    for first in range(0, len(bodies), per_transaction):
        db.execute("BEGIN IMMEDIATE")
        for rows in bodies[first:first + per_transaction]:
            db.execute("SAVEPOINT batch")
            db.execute(insert, rows)
            db.execute("RELEASE batch")
        db.execute("COMMIT")
    seconds = time.perf_counter() - start
    written = storage_written_bytes() - written
    points = batches * STEPS_PER_BATCH * SERIES_PER_RUN
    db.close()  # the last connection checkpoints the WAL into the file
    size = os.path.getsize(path)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return {"layout": layout, "page_size": page_size, "points": points,
            "points_per_s": round(points / seconds),
            "storage_bytes_per_point": round(written / points, 1),
            "file_bytes_per_point": round(size / points, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--page-sizes", default="4096")
    args = ap.parse_args()
    for _ in range(args.rounds):
        for page_size in (int(p) for p in args.page_sizes.split(",")):
            for layout in LAYOUTS:
                print(json.dumps(measure(args.dir, layout, page_size, args.batches)),
                      flush=True)


if __name__ == "__main__":
    main()
