"""`ctflow drift` as a CI step: the numbers are scipy's, the exit status says whether the
dataset drifted, and bad input gets a clear error."""
import json
import subprocess

import numpy as np
from scipy.stats import chisquare, ks_2samp, wasserstein_distance


def write_csv(path, columns):
    names = list(columns)
    rows = zip(*columns.values())
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


def drift(ctflow_bin, *args):
    return subprocess.run([ctflow_bin, "drift", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_drift_numbers_match_scipy_and_the_exit_status_gates(ctflow_bin, tmp_path):
    rng = np.random.default_rng(7)
    ref = {"x": rng.normal(0, 1, 800).round(6), "y": rng.normal(5, 2, 800).round(6),
           "kind": rng.choice(["a", "b", "c"], 800)}
    same = {"x": rng.normal(0, 1, 600).round(6), "y": rng.normal(5, 2, 600).round(6),
            "kind": rng.choice(["a", "b", "c"], 600)}
    moved = {"x": rng.normal(0.6, 1, 600).round(6), "y": rng.normal(7, 2, 600).round(6),
             "kind": rng.choice(["a", "b", "c"], 600, p=[0.6, 0.3, 0.1])}
    reference = write_csv(tmp_path / "ref.csv", ref)
    stable = write_csv(tmp_path / "same.csv", same)
    drifted = write_csv(tmp_path / "moved.csv", moved)

    out = drift(ctflow_bin, "--reference", reference, "--current", stable, "--output", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["dataset"]["drifted"] is False
    by_column = {c["column"]: c for c in report["columns"]}
    assert by_column["x"]["method"] == "ks" and by_column["kind"]["method"] == "chi_square"
    ks = ks_2samp(ref["x"], same["x"])
    assert abs(by_column["x"]["p_value"] - ks.pvalue) <= 1e-9 * ks.pvalue
    assert abs(by_column["x"]["statistic"] - ks.statistic) <= 1e-12

    out = drift(ctflow_bin, "--reference", reference, "--current", drifted, "--output", "json")
    assert out.returncode == 3, out.stderr
    report = json.loads(out.stdout)
    assert report["dataset"]["drifted"] is True and report["dataset"]["drifted_columns"] == 3
    by_column = {c["column"]: c for c in report["columns"]}
    keys = ["a", "b", "c"]
    ref_counts = np.array([list(ref["kind"]).count(k) for k in keys], dtype=float)
    cur_counts = np.array([list(moved["kind"]).count(k) for k in keys], dtype=float)
    chi = chisquare(cur_counts, ref_counts * (600 / 800))
    assert abs(by_column["kind"]["statistic"] - chi.statistic) <= 1e-9 * chi.statistic

    # Forced method per column, PSI with its bin edges kept, the table output.
    out = drift(ctflow_bin, "--reference", reference, "--current", drifted, "--method", "wasserstein",
                "--column", "kind=psi", "--output", "json")
    report = json.loads(out.stdout)
    by_column = {c["column"]: c for c in report["columns"]}
    expected = wasserstein_distance(ref["x"], moved["x"]) / np.std(ref["x"])
    assert abs(by_column["x"]["statistic"] - expected) <= 1e-9 * expected
    assert by_column["kind"]["method"] == "psi"
    out = drift(ctflow_bin, "--reference", reference, "--current", drifted)
    assert out.returncode == 3 and "DATASET DRIFT" in out.stdout and "Column" in out.stdout
    out = drift(ctflow_bin, "--reference", reference, "--current", drifted, "--output", "html")
    assert out.returncode == 3 and out.stdout.startswith("<!doctype html>")
    assert out.stdout.count("<svg") == 3 and "<script" not in out.stdout


def test_bad_input_is_explained(ctflow_bin, tmp_path):
    reference = write_csv(tmp_path / "ref.csv", {"a": [1, 2, 3], "b": [1, 2, 3]})
    other = write_csv(tmp_path / "other.csv", {"a": [1, 2, 3], "c": [1, 2, 3]})
    out = drift(ctflow_bin, "--reference", reference, "--current", other)
    assert out.returncode == 1 and "only in the reference: [b]" in out.stderr
    (tmp_path / "empty.csv").write_text("")
    out = drift(ctflow_bin, "--reference", reference, "--current", tmp_path / "empty.csv")
    assert out.returncode == 1 and "no header" in out.stderr
    nulls = write_csv(tmp_path / "nulls.csv", {"a": [1, 2, 3], "b": ["NA", "", "null"]})
    out = drift(ctflow_bin, "--reference", reference, "--current", nulls)
    assert out.returncode == 0 and "b: skipped, no usable values in the current data" in out.stdout
    many = write_csv(tmp_path / "many.csv", {"a": [f"k{i}" for i in range(20000)]})
    many_cur = write_csv(tmp_path / "many_cur.csv", {"a": [f"k{i}" for i in range(10000, 30000)]})
    out = drift(ctflow_bin, "--reference", many, "--current", many_cur, "--output", "json")
    assert out.returncode == 3, out.stderr
    out = drift(ctflow_bin, "--reference", reference, "--current", reference, "--method", "nope")
    assert out.returncode == 2 and "unknown drift method 'nope'" in out.stderr


def test_parquet_from_pyarrow_reads_like_csv(ctflow_bin, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(11)
    ref = {"x": rng.normal(0, 1, 500).round(6), "kind": rng.choice(["a", "b", "c"], 500), "n": rng.integers(0, 100, 500)}
    cur = {"x": rng.normal(0.3, 1, 400).round(6), "kind": rng.choice(["a", "b", "c"], 400), "n": rng.integers(0, 100, 400)}
    write_csv(tmp_path / "ref.csv", ref)
    write_csv(tmp_path / "cur.csv", cur)
    pq.write_table(pa.table(ref), tmp_path / "ref.parquet", compression="zstd")
    pq.write_table(pa.table(cur), tmp_path / "cur.parquet")  # snappy
    from_csv = json.loads(drift(ctflow_bin, "--reference", tmp_path / "ref.csv", "--current", tmp_path / "cur.csv", "--output", "json").stdout)
    out = drift(ctflow_bin, "--reference", tmp_path / "ref.parquet", "--current", tmp_path / "cur.parquet", "--output", "json")
    assert out.returncode in (0, 3), out.stderr
    from_parquet = json.loads(out.stdout)
    assert from_parquet["columns"] == from_csv["columns"]


def test_windows_pick_the_current_rows(ctflow_bin, tmp_path):
    """`--last-rows` and `--time-column/--last` judge only part of the current file; the
    numbers are scipy's on that part."""
    rng = np.random.default_rng(17)
    ref_x = rng.normal(0, 1, 600).round(6)
    old = rng.normal(3, 1, 500).round(6)  # long ago, drifted
    new = rng.normal(0, 1, 300).round(6)  # recent, like the reference
    stamps = [f"2026-11-{1 + i // 100:02d}T{i % 24:02d}:00:00Z" for i in range(500)] + \
             [f"2026-11-25 {i % 24:02d}:30:00" for i in range(300)]
    reference = write_csv(tmp_path / "ref.csv", {"ts": ["2026-10-01"] * 600, "x": ref_x})
    current = write_csv(tmp_path / "cur.csv", {"ts": stamps, "x": np.concatenate([old, new])})

    whole = drift(ctflow_bin, "--reference", reference, "--current", current, "--numeric", "x", "--output", "json")
    assert whole.returncode == 3, whole.stderr
    out = drift(ctflow_bin, "--reference", reference, "--current", current, "--last-rows", "300", "--output", "json")
    report = json.loads(out.stdout)
    x = next(c for c in report["columns"] if c["column"] == "x")
    expected = ks_2samp(ref_x, new)
    assert report["current_rows"] == 300 and abs(x["p_value"] - expected.pvalue) <= 1e-9 * expected.pvalue
    out = drift(ctflow_bin, "--reference", reference, "--current", current, "--time-column", "ts", "--last", "1d",
                "--output", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["current_rows"] == 300 and [c["column"] for c in report["columns"]] == ["x"]
    out = drift(ctflow_bin, "--reference", reference, "--current", write_csv(tmp_path / "bad.csv", {"ts": ["soon"], "x": [1]}),
                "--time-column", "ts", "--last", "1d")
    assert out.returncode == 1 and "'soon', which is not a timestamp" in out.stderr
