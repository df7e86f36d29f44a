"""Writes crates/ctflow-core/tests/drift_fixtures.json: scipy's values for ctflow's drift
statistics on deterministic samples.

The samples are not stored: both this script and the Rust test generate them with the
same integer generator (a 32-bit LCG) and only exact arithmetic on dyadic rationals, so
Python and Rust see bit-identical numbers. Run with the test venv:
    .venv/bin/python scripts/drift_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, ks_2samp, kstwo, wasserstein_distance

OUT = Path(__file__).resolve().parents[1] / "crates" / "ctflow-core" / "tests" / "drift_fixtures.json"


def uniforms(seed, count):
    """20-bit uniforms in [0, 1): (x >> 12) / 2^20 of x = 1664525 x + 1013904223 mod 2^32."""
    x = seed & 0xFFFFFFFF
    out = []
    for _ in range(count):
        x = (1664525 * x + 1013904223) & 0xFFFFFFFF
        out.append((x >> 12) / 1048576.0)
    return out


def sample(kind, seed, n, shift=0.0, scale=1.0):
    u = uniforms(seed, 4 * n)
    if kind == "normalish":  # Irwin-Hall of 4, centred
        return [(u[4 * i] + u[4 * i + 1] + u[4 * i + 2] + u[4 * i + 3] - 2.0) * scale + shift for i in range(n)]
    if kind == "skewed":
        return [u[i] * u[i] * 8.0 * scale + shift for i in range(n)]
    if kind == "ties":
        return [float(int(u[i] * 6.0)) + shift for i in range(n)]
    raise ValueError(kind)


def categories(seed, n, k, first=0):
    return [chr(ord("a") + first + int(v * k)) for v in uniforms(seed, n)]


NUMERIC = [
    # name, reference (kind, seed, n, shift, scale), current (...)
    ("small", ("normalish", 1, 20, 0.0, 1.0), ("normalish", 2, 25, 0.5, 1.0)),
    ("equal_sizes", ("normalish", 3, 40, 0.0, 1.0), ("normalish", 4, 40, 0.25, 1.0)),
    ("ties", ("ties", 5, 50, 0.0, 1.0), ("ties", 6, 60, 0.0, 1.0)),
    ("skewed", ("skewed", 7, 500, 0.0, 1.0), ("skewed", 8, 800, 0.0, 1.5)),
    ("large_no_drift", ("normalish", 9, 3000, 0.0, 2.0), ("normalish", 10, 2000, 0.0, 2.0)),
    ("large_drift", ("normalish", 11, 4000, 0.0, 1.0), ("normalish", 12, 5000, 0.125, 1.0)),
    ("asymptotic", ("normalish", 13, 12000, 0.0, 1.0), ("normalish", 14, 15000, 0.0625, 1.0)),
    ("asymptotic_no_drift", ("normalish", 15, 20000, 0.0, 1.0), ("normalish", 16, 30000, 0.0, 1.0)),
    ("asymptotic_small_current", ("skewed", 17, 12000, 0.0, 1.0), ("skewed", 18, 120, 0.0, 1.2)),
]

# (n, x) for scipy.stats.kstwo.sf, one or more per method scipy's kolmogn chooses:
# Ruben-Gambino ends, Smirnov's sum (n <= 10^6) and its approximation (n > 10^6), the Durbin
# matrix, Pomeranz's recursion (n <= 140) and Pelz-Good.
KSTWO = [
    (5, 0.15), (200, 0.004), (10, 0.95), (10, 0.6), (100, 0.05), (100, 0.15), (130, 0.1),
    (100, 0.25), (141, 0.03), (141, 0.1), (10000, 0.0025), (10000, 0.003), (10000, 0.01),
    (10000, 0.02), (60000, 0.004), (500000, 0.001), (500000, 0.003), (2000000, 0.0015),
    (50000, 0.1),
]

CATEGORICAL = [
    ("categories_same", (21, 300, 4, 0), (22, 400, 4, 0)),
    ("categories_unseen", (23, 300, 4, 0), (24, 200, 5, 0)),
    ("categories_shifted", (25, 1000, 6, 0), (26, 1000, 6, 1)),
]


def numeric_case(name, ref_spec, cur_spec):
    ref = np.array(sample(*ref_spec))
    cur = np.array(sample(*cur_spec))
    ks = ks_2samp(ref, cur)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    ref_frac = np.histogram(ref, edges)[0] / len(ref)
    cur_frac = np.histogram(cur, edges)[0] / len(cur)
    quantiles = np.quantile(ref, np.linspace(0, 1, 11))
    return {
        "name": name, "reference": list(ref_spec), "current": list(cur_spec),
        "ks_statistic": float(ks.statistic), "ks_p_value": float(ks.pvalue),
        "ks_exact": max(len(ref), len(cur)) <= 10000,
        "wasserstein": float(wasserstein_distance(ref, cur)),
        "wasserstein_normed": float(wasserstein_distance(ref, cur) / np.std(ref)),
        "sturges_edges": [float(e) for e in edges],
        "sturges_reference_fractions": [float(v) for v in ref_frac],
        "sturges_current_fractions": [float(v) for v in cur_frac],
        "jensen_shannon_sturges": float(jensenshannon(ref_frac, cur_frac)),
        "reference_deciles": [float(q) for q in quantiles],
    }


def categorical_case(name, ref_spec, cur_spec):
    ref = categories(*ref_spec)
    cur = categories(*cur_spec)
    keys = sorted(set(ref) | set(cur))
    ref_counts = np.array([ref.count(k) for k in keys], dtype=float)
    cur_counts = np.array([cur.count(k) for k in keys], dtype=float)
    expected = ref_counts * (len(cur) / len(ref))
    with np.errstate(divide="ignore", invalid="ignore"):
        chi = chisquare(cur_counts, expected) if all(expected > 0) else None
    return {
        "name": name, "reference": list(ref_spec), "current": list(cur_spec), "keys": keys,
        "reference_counts": ref_counts.tolist(), "current_counts": cur_counts.tolist(),
        "chi_square_statistic": float(chi.statistic) if chi is not None else None,
        "chi_square_p_value": float(chi.pvalue) if chi is not None else 0.0,
        "jensen_shannon": float(jensenshannon(ref_counts / len(ref), cur_counts / len(cur))),
    }


def main():
    import scipy
    fixtures = {
        "generated_by": f"scripts/drift_fixtures.py with scipy {scipy.__version__}, numpy {np.__version__}",
        "numeric": [numeric_case(*c) for c in NUMERIC],
        "categorical": [categorical_case(*c) for c in CATEGORICAL],
        "kstwo_sf": [[n, x, float(kstwo.sf(x, n))] for n, x in KSTWO],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixtures, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
