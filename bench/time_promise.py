"""The time promise on the cases that broke it: wall time / limit of ``submit`` where the work
outgrows the limit, the last phase included (predicting, logging, registering).

- ``seeds``: 2,000 rows x 10 columns, ``--seeds 50 --time-limit 20``, once with ridge (no seed
  declared: one fit a fold) and once with LightGBM (50 seeds, 5 folds: 250 fits, more than the
  time pays for);
- ``wide``: 1,000 rows x 5,000 columns, the default portfolio, ``--time-limit 40`` (the shift
  check alone had taken 131 s).

The tables are generated (seeded) into bench/.data/promise-*/. Each run is one process at a time,
in a fresh folder (its own MLflow store), measured from outside (bench_tabular.measure); ``--load N``
keeps N CPU-bound processes busy beside each run.

    .venv/bin/python bench/time_promise.py            # quiet machine
    .venv/bin/python bench/time_promise.py --load 2   # under load
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_tabular import _busy_loop, _one_line_error, measure  # noqa: E402

DATA = ROOT / "bench" / ".data"
CASES = {  # name: (table, extra arguments, time limit)
    "seeds-ridge": ("promise-2k", ["--model", "ridge", "--seeds", "50"], 20),
    "seeds-lightgbm": ("promise-2k", ["--model", "lightgbm", "--seeds", "50"], 20),
    "wide-portfolio": ("promise-wide", [], 40),
}
TABLES = {"promise-2k": (2000, 10, 1000), "promise-wide": (1000, 5000, 500)}  # train rows, columns, test rows


def build(name: str) -> Path:
    folder = DATA / name
    if (folder / "sample_submission.csv").is_file():
        return folder
    n_train, n_columns, n_test = TABLES[name]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_train + n_test, n_columns)).astype(np.float32)
    y = X[:, :5].sum(axis=1) + rng.normal(size=n_train + n_test)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(n_columns)])
    frame.insert(0, "id", np.arange(n_train + n_test))
    folder.mkdir(parents=True, exist_ok=True)
    frame.iloc[:n_train].assign(target=y[:n_train]).to_csv(folder / "train.csv", index=False)
    frame.iloc[n_train:].to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": frame["id"].iloc[n_train:], "target": 0.0}).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=0, help="CPU-bound busy processes beside each run")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args(argv)
    hogs = [multiprocessing.Process(target=_busy_loop, daemon=True) for _ in range(args.load)]
    for hog in hogs:
        hog.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"{'case':<16} {'limit s':>8} {'wall s':>8} {'wall/limit':>10} {'rc':>3}  last line")
    for name in args.cases.split(","):
        table, extra, limit = CASES[name]
        data = build(table)
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "pipeline", "submit", "--data-dir", str(data), "--target", "target",
                       "--id", "id", "--time-limit", str(limit), "--output", str(Path(tmp) / "submission.csv"), *extra]
            log = Path(tmp) / "run.log"
            result = measure(command, Path(tmp), env, log, kill_after=10 * limit)
            last = _one_line_error(log) if result["rc"] else "submission written"
            print(f"{name:<16} {limit:>8} {result['wall_s']:>8.1f} {result['wall_s'] / limit:>10.3f} {result['rc']:>3}  {last}",
                  flush=True)
    for hog in hogs:
        hog.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
