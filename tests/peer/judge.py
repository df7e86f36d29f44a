"""Judge a ctflow run of MLflow's own server tests against the recorded MLflow outcomes.

usage: python judge.py CTFLOW.jsonl            check: exit 1 on a regression
       python judge.py --record MLFLOW.jsonl   rewrite mlflow_passes.txt from an MLflow run

`mlflow_passes.txt` lists the tests MLflow 3.17.2 passes (refreshed by `scripts/peer
refresh`). `ctflow_pending.txt` lists those ctflow does not pass yet, each with its
reason: a surface still to build (issue 24) or a deliberate difference
(docs/compatibility.md). The check fails when a test MLflow passes fails on ctflow and is
not pending, and when a pending test now passes (so the list only ever shrinks).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "harness"))
# Each test's outcome as the harness' comparison reads it.
from summarize import first_line, load  # noqa: E402


def read_list(path):
    entries = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, _, reason = line.partition("  # ")
        entries[nodeid.strip()] = reason.strip()
    return entries


def record(mlflow_jsonl):
    outcomes = load(mlflow_jsonl)
    passed = sorted(i for i, (outcome, _) in outcomes.items() if outcome == "passed")
    header = (
        "# Tests that pass on the real MLflow 3.17.2 server (tests/peer/run_peer.sh, the\n"
        "# MLflow side). Written by `scripts/peer refresh`; do not edit by hand.\n"
    )
    (HERE / "mlflow_passes.txt").write_text(header + "\n".join(passed) + "\n")
    print(f"recorded {len(passed)} tests that MLflow passes")
    return 0


def check(ctflow_jsonl):
    mlflow_passes = read_list(HERE / "mlflow_passes.txt")
    pending = read_list(HERE / "ctflow_pending.txt")
    outcomes = load(ctflow_jsonl)
    regressions, now_passing, still_pending = [], [], 0
    for nodeid in mlflow_passes:
        outcome, message = outcomes.get(nodeid, ("missing", "not run"))
        if outcome == "passed":
            if nodeid in pending:
                now_passing.append(nodeid)
        elif nodeid in pending:
            still_pending += 1
        else:
            regressions.append(f"{nodeid}: {outcome}: {first_line(message, 200)}")
    stale = sorted(set(pending) - set(mlflow_passes))
    passing = sum(1 for n in mlflow_passes if outcomes.get(n, ("missing",))[0] == "passed")
    print(
        f"peer suite: ctflow passes {passing} of the {len(mlflow_passes)} tests MLflow passes; "
        f"{still_pending} pending (tests/peer/ctflow_pending.txt)"
    )
    for line in regressions:
        print(f"REGRESSION {line}")
    for nodeid in now_passing:
        print(f"NOW PASSES (remove it from ctflow_pending.txt) {nodeid}")
    for nodeid in stale:
        print(f"NOT AN MLFLOW PASS (remove it from ctflow_pending.txt) {nodeid}")
    return 1 if regressions or now_passing or stale else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--record":
        sys.exit(record(sys.argv[2]))
    if len(sys.argv) == 2:
        sys.exit(check(sys.argv[1]))
    sys.exit(__doc__)
