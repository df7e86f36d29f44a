"""Helpers the measuring scripts beside this file share (imported as `bench_support`: a
script run as `python3 bench/NAME.py` finds it on its own directory's path)."""
import importlib.util
import os

# The shared REST benchmark, beside this checkout.
MLFLOW_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                            "bench", "mlflow_bench.py")


def load_mlflow_bench(path=MLFLOW_BENCH):
    """The REST benchmark as a module, to make its calls with its own client and workloads."""
    spec = importlib.util.spec_from_file_location("mlflow_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def storage_written_bytes(pid="self"):
    """Bytes the process has sent toward storage (`write_bytes` of /proc/PID/io)."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise SystemExit(f"no write_bytes in /proc/{pid}/io")
