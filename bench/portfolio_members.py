"""What one portfolio configuration adds: each configuration k-fold through the one loop, then the
ensemble selected with and without each new one, on a suite task.

    PYTHONPATH=. .venv/bin/python bench/portfolio_members.py --task hotel_price \\
        --configs lightgbm ridge xgboost --new lightgbm_crafted [--rows N] [--seed 0]

Configurations by their names in pipeline/portfolios/tabular.toml (``lightgbm+target+groups``:
``lightgbm`` with those crafted steps, features.crafted.STEPS; ``lightgbm_crafted@colsample_bytree=0.5``:
with that parameter), fit without a time limit on
the same folds. Printed: each one's out-of-fold score and seconds; then for each ``--new`` one
the cross-fitted score of the ensemble selected from all of them and from all but it, and the
weight it earns. ``--record FILE`` appends the rows as JSON lines (bench/zeroshot.py reads them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tabular_suite  # noqa: E402

from models.time_limit import TimeLimit  # noqa: E402
from pipeline import config  # noqa: E402
from pipeline.data import tabular  # noqa: E402
from pipeline.metrics import get as get_metric  # noqa: E402
from pipeline.tasks import configuration, portfolio  # noqa: E402
from pipeline.tasks.tabular import _methods  # noqa: E402


def load_task(name: str, rows: int | None = None, **cv):
    """A suite task as ``submit`` reads it (its files built first when missing): the task, its
    competition with ``cv`` over the folds' settings, the features, the target and the metric
    (classes sorted, as submit binds them); ``rows``: the first N training rows only."""
    task = tabular_suite.TASKS[name]
    folder = tabular_suite.build(task)
    comp = config.load(task.name, target=task.target, id_column=task.id, task=task.kind, metric=task.metric)
    comp = dataclasses.replace(comp, cv=dataclasses.replace(comp.cv, **cv),
                               target_transform="log1p" if task.metric == "rmsle" else None)  # as submit does
    data = tabular.load(comp, folder)
    train = data.train if rows is None else data.train.head(rows)
    X, y = train.drop(columns=[task.target, task.id]), train[task.target]
    metric = get_metric(task.metric)
    if task.is_classification:
        metric = metric.with_classes(np.unique(y.to_numpy()))
    return task, comp, X, y, metric


def _config(by_name: dict, name: str) -> configuration.Configuration:
    """A configuration of the portfolio by name; ``NAME+step+step``: it with those crafted steps;
    ``NAME@key=value@key=value``: with those parameters (numbers) on top of its own."""
    head, *settings = name.split("@")
    base, *steps = head.split("+")
    params = {**by_name[base].params, **{k: (int(v) if v.isdigit() else float(v)) for k, v in (s.split("=") for s in settings)}}
    return dataclasses.replace(by_name[base], name=name, crafted=tuple(steps) or by_name[base].crafted,
                               params=params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hotel_price", choices=sorted(tabular_suite.TASKS))
    parser.add_argument("--configs", nargs="+", default=["lightgbm"])
    parser.add_argument("--new", nargs="*", default=[])
    parser.add_argument("--rows", type=int, default=None, help="the first N training rows only")
    parser.add_argument("--seed", type=int, default=0, help="the folds' shuffle")
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args(argv)
    task, comp, X, y, metric = load_task(args.task, args.rows, seed=args.seed)
    by_name = {c.name: c for c in configuration.load(task.kind, task.metric)}
    configs = tuple(_config(by_name, name) for name in [*args.configs, *args.new])
    runner = portfolio.Portfolio(comp, X, y, 0, task=task.kind, metric=metric, configs=configs,
                                 methods=_methods(comp.ensemble.method, task.is_classification), time_limit=TimeLimit(None),
                                 proba=task.is_classification)
    print(f"{task.name}: {len(X)} rows, {X.shape[1]} columns, {comp.cv.folds}-fold (seed {args.seed}), {task.metric}",
          flush=True)
    fitted = []
    for config_ in configs:
        started = time.perf_counter()
        fitted.append(runner.fit(config_))
        print(f"  {config_.name:<22} {fitted[-1].score:>10.5f} {time.perf_counter() - started:>7.1f} s", flush=True)
    everything = runner.select(fitted)
    rows = []
    for name in args.new:
        others = [f for f in fitted if f.config.name != name]
        without = runner.select(others)
        weight = float(everything.weights[[f.config.name for f in fitted].index(name)])
        print(f"  ensemble with {name}: {everything.score:.5f} (its weight {weight:.2f}); without: {without.score:.5f}")
        rows.append({"task": task.name, "seed": args.seed, "rows": args.rows, "new": name, "with": everything.score,
                     "without": without.score, "weight": weight,
                     "scores": {f.config.name: f.score for f in fitted},
                     "seconds": {f.config.name: f.seconds for f in fitted}})
    if args.record:
        with args.record.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
