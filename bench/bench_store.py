"""Starting together on a new MLflow store: do N `submit`-like processes all get their run?

Each repeat makes a fresh, empty SQLite store in a temporary folder and starts ``--processes``
processes (default 4) that import the pipeline, wait for one go signal, then each open
``tracking.run("shared", ...)`` and log a metric: what two to four `make submit` started at once
on a new checkout do first. Prints per repeat "k/N succeeded", the experiments named "shared"
(1 is right), the seconds from go to the last exit, and the first error line of each failure.
Exits 1 unless every process of every repeat succeeded.

    python bench/bench_store.py [--repeats 5] [--processes 4]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
from pathlib import Path
from pipeline import tracking

go, index = Path(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
with tracking.run("shared", f"submit-{index}"):
    tracking.log_metrics({"score": index})
"""


def repeat(processes: int) -> tuple[int, int, float, list[str]]:
    """One fresh store: (succeeded, experiments named "shared", seconds after go, errors)."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        folder = Path(tmp)
        store = folder / "mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "PYTHONPATH": str(ROOT)}
        go = folder / "go"
        children = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(i)], cwd=folder, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for i in range(processes)]
        for child in children:
            child.stdout.readline()
        started = time.perf_counter()
        go.touch()
        errors = []
        for child in children:
            _, err = child.communicate()
            if child.returncode:
                lines = [line for line in err.splitlines() if "Error" in line] or err.splitlines() or ["?"]
                errors.append(lines[-1][:160])
        seconds = time.perf_counter() - started
        experiments = 0
        if store.is_file():
            with sqlite3.connect(store) as db:
                try:
                    experiments = db.execute("select count(*) from experiments where name = 'shared'").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        return processes - len(errors), experiments, seconds, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    total = 0
    for index in range(args.repeats):
        ok, experiments, seconds, errors = repeat(args.processes)
        total += ok
        print(f"repeat {index + 1}: {ok}/{args.processes} succeeded, {experiments} experiment 'shared', "
              f"{seconds:.1f} s after go", flush=True)
        for error in errors:
            print(f"    {error}", flush=True)
    print(f"all: {total}/{args.repeats * args.processes} succeeded")
    return 0 if total == args.repeats * args.processes else 1


if __name__ == "__main__":
    sys.exit(main())
