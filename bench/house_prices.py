"""`make bench`: the default `make submit` for house prices, scored and timed.

For the bundled Ames data and for the real Kaggle files (``--data-dir``, default
``../shared/data/house-prices``), prints each model's and the ensemble's 5-fold CV log-RMSE on
all rows and without the config's outlier rows, and the wall time of the whole submit stage.
MLflow logs go to a temporary store, so benchmarking leaves the project's store alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline import config, stages
from pipeline.data import sources


def bench(comp: config.Competition, data_dir: Path, workdir: Path, label: str) -> None:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = stages.run(comp, data_dir, output=workdir / f"submission-{label}.csv", tuned=False)
    wall = time.perf_counter() - started
    print(f"\n{label}: {data_dir}")
    print(f"  {'model':<14} {'cv (headline)':>14} {'with outliers':>14}")
    for name, score in outcome.scores.items():
        print(f"  {name:<14} {score:>14.5f} {outcome.scores_with_outliers.get(name, score):>14.5f}")
    if outcome.weights:
        print("  weights: " + ", ".join(f"{n} {w:.3f}" for n, w in outcome.weights.items()))
    if outcome.local_score is not None:
        print(f"  local test log_rmse (held-back labels): {outcome.local_score:.5f}")
    print(f"  wall time of the submit stage: {wall:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/house-prices"))
    parser.add_argument("--model", help="benchmark this model instead of the config's default")
    args = parser.parse_args()
    comp = config.load("house-prices")
    if args.model:
        comp = config.load("house-prices", model={"name": args.model})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
        bundled = workdir / "bundled"
        with contextlib.redirect_stdout(io.StringIO()):
            sources.fill(comp, bundled, prefer_bundled=True)
        bench(comp, bundled, workdir, "bundled Ames")
        if (args.data_dir / comp.train_file).is_file():
            bench(comp, args.data_dir, workdir, "Kaggle files")
        else:
            print(f"\nKaggle files: {args.data_dir} not found, skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
