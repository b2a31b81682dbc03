"""LightGBM's held-out score after R rounds at several learning rates, on one fold of a suite task
(no time limit; early stopping inside the fold as the portfolio fits it): what a fit the time
limit cuts at R rounds would score at each rate (models.boosting.HURRIED_MAX_RATE).

    PYTHONPATH=. .venv/bin/python bench/learning_rates.py flights_delay [--rates 0.05 0.1 0.2 0.4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from portfolio_members import load_task  # noqa: E402

from models.boosters import LightGBMClassifier, LightGBMRegressor  # noqa: E402
from pipeline.tasks import kfold  # noqa: E402

ROUNDS = (50, 100, 200, 400, 800, 1600, 3200, 6400)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--rates", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.4])
    args = parser.parse_args(argv)
    task, comp, X, y, metric = load_task(args.task)
    fit_rows, held_rows = next(kfold.splitter(comp, task.kind).split(X, y))
    features = kfold.build_features(comp, "onehot")
    target = np.log1p(y.to_numpy()) if task.metric == "rmsle" else y.to_numpy()
    A = features.fit_transform(X.iloc[fit_rows], target[fit_rows])
    B = features.transform(X.iloc[held_rows])
    print(f"{task.name}: {A.shape[0]} rows x {A.shape[1]} features; {task.metric} after {', '.join(map(str, ROUNDS))} rounds")
    for rate in args.rates:
        model = (LightGBMClassifier if task.is_classification else LightGBMRegressor)(
            learning_rate=rate, eval_metric="mae" if task.metric == "mae" else None)
        started = time.process_time()
        model.fit(A, target[fit_rows])
        per_round = (time.process_time() - started) / model.n_iter_
        scores = []
        for rounds in ROUNDS:
            raw = model.booster_.predict(B, num_iteration=min(rounds, model.best_iteration_))
            if task.is_classification:
                p = raw if raw.ndim == 2 else np.column_stack([1 - raw, raw])
                p = p / p.sum(axis=1, keepdims=True)
                p = p[:, 1] if p.shape[1] == 2 else p
            else:
                p = np.expm1(raw) if task.metric == "rmsle" else raw
            scores.append(kfold.score(metric, y.to_numpy()[held_rows], p, task.is_classification))
        print(f"  rate {rate:g}: best round {model.best_iteration_} ({per_round * 1000:.1f} ms of CPU a round): "
              + " ".join(f"{s:.4f}" for s in scores), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
