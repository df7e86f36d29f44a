"""The numpy/scipy side of the drift benchmark: 1,000,000 rows x 20 numeric columns,
reference against current, each column as Evidently's default test computes it at this
size (distinct-value count of both samples, then Wasserstein distance / reference std).
Prints the best of 5 runs in seconds, as JSON; `cargo bench -p ctflow-watcher --bench drift`
is ctflow's side."""
import json
import time

import numpy as np
from scipy.stats import wasserstein_distance

ROWS, COLUMNS = 1_000_000, 20
rng = np.random.default_rng(1)
reference = [rng.normal(0, 1, ROWS) for _ in range(COLUMNS)]
current = [rng.normal(0.05 if i % 2 == 0 else 0.0, 1, ROWS) for i in range(COLUMNS)]


def default_tests(with_nunique):
    drifted = 0
    for r, c in zip(reference, current):
        if with_nunique:
            np.unique(np.concatenate([r, c])).size  # Evidently's n_values, which picks the test
        if wasserstein_distance(r, c) / np.std(r) >= 0.1:
            drifted += 1
    return drifted


results = {}
for label, flag in (("scipy_with_method_choice", True), ("scipy_wasserstein_only", False)):
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        default_tests(flag)
        best = min(best, time.perf_counter() - t0)
    results[label + "_best_of_5_s"] = round(best, 4)
import scipy
print(json.dumps({"rows": ROWS, "columns": COLUMNS, "numpy": np.__version__, "scipy": scipy.__version__, **results}))
