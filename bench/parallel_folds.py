"""Seconds per configuration with folds fit one after another or in parallel, on suite tasks.

The portfolio's first configuration (LightGBM at its defaults), k-fold through the one loop
(``Portfolio.fit``), three ways on the same folds and seed:

- ``in process``: one fold after another, each fit at every core's thread (1 worker x 2 threads here);
- ``pool``: ``[cv] fold_workers = 2``: two loky processes, each fit at one thread (2 x 1);
- ``dask``: ``[cv] cluster``: a local Dask cluster on loopback (2 workers x 1 thread), as a run
  on a real cluster would use it.

Each is timed ``--repeats`` times, from fold features not fit yet (the first configuration of
its feature encoding), the ways taking turns (the machine's load falls on all of them
alike); the median and the spread (min-max) are printed, with the largest difference between
their out-of-fold predictions (0: the same model). The pool's and the cluster's start (worker
processes importing the package) is timed once, apart: a process pays it once, not per configuration::

    PYTHONPATH=. .venv/bin/python bench/parallel_folds.py --tasks caravan hotel_price diamonds_cut [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import tabular_suite  # noqa: E402

from models import threads  # noqa: E402
from models.time_limit import TimeLimit  # noqa: E402
from pipeline import config  # noqa: E402
from pipeline.data import tabular  # noqa: E402
from pipeline.metrics import get as get_metric  # noqa: E402
from pipeline.tasks import configuration, executor, portfolio  # noqa: E402


def _runner(comp, X, y, task, metric, cv_changes: dict) -> portfolio.Portfolio:
    comp = dataclasses.replace(comp, cv=dataclasses.replace(comp.cv, **cv_changes))
    configs = configuration.load(task.kind, task.metric)[:1]  # the portfolio's first: LightGBM
    return portfolio.Portfolio(comp, X, y, 0, task=task.kind, metric=metric, configs=configs, methods={},
                               time_limit=TimeLimit(None), proba=task.is_classification)


def _started(runner: portfolio.Portfolio) -> float:
    """Seconds the executor's workers take to start and import the package (one tiny job each)."""
    started = time.perf_counter()
    frame = runner.X.head(40)
    jobs = [executor.FoldJob(configuration.Configuration("ridge", "ridge"), {}, np.zeros(20), get_metric("rmse"),
                             False, comp=runner.comp, X_fit=frame.head(20), X_valid=frame.tail(20))
            for _ in range(runner.executor.workers)]
    runner.executor.map(jobs)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["caravan", "hotel_price", "diamonds_cut"],
                        choices=sorted(tabular_suite.TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                      dashboard_address=":0") as cluster:
        ways = {"in process (1x2)": {}, "pool (2x1)": {"fold_workers": 2},
                "dask (2x1)": {"cluster": cluster.scheduler_address}}
        print(f"{threads.cores()} cores; LightGBM (the portfolio's first configuration), {args.folds}-fold, "
              f"{args.repeats} timings each", flush=True)
        try:
            for name in args.tasks:
                _bench(tabular_suite.TASKS[name], ways, args)
        finally:
            executor.cluster(cluster.scheduler_address).close()
    return 0


def _bench(task, ways: dict, args) -> None:
    folder = tabular_suite.build(task)
    comp = config.load(task.name, target=task.target, id_column=task.id, task=task.kind, metric=task.metric)
    comp = dataclasses.replace(comp, cv=dataclasses.replace(comp.cv, folds=args.folds))
    data = tabular.load(comp, folder)
    X, y = data.train.drop(columns=[task.target, task.id]), data.train[task.target]
    metric = get_metric(task.metric)
    if task.is_classification:
        metric = metric.with_classes(tabular_suite.classes_of(task, y))
    starts = {way: _started(runner) for way, changes in ways.items()
              if (runner := _runner(comp, X, y, task, metric, changes)).executor.workers > 1}
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    oofs = {}
    for _ in range(args.repeats):
        for way, changes in ways.items():
            runner = _runner(comp, X, y, task, metric, changes)  # its fold features not cached yet
            started = time.perf_counter()
            fitted = runner.fit(runner.configs[0])
            seconds[way].append(time.perf_counter() - started)
            oofs[way] = fitted.oof
    alone = seconds["in process (1x2)"]
    print(f"\n{task.name}: {len(X)} rows, {X.shape[1]} columns, {task.metric}")
    print(f"{'way':<18} {'median s':>9} {'min-max s':>13} {'speed-up':>9} {'start s':>8} {'max |oof diff|':>15}")
    for way, times in seconds.items():
        diff = float(np.max(np.abs(oofs[way] - oofs["in process (1x2)"])))
        start = f"{starts[way]:.1f}" if way in starts else "-"
        print(f"{way:<18} {statistics.median(times):>9.1f} {min(times):>6.1f}-{max(times):<6.1f} "
              f"{statistics.median(alone) / statistics.median(times):>9.2f} {start:>8} {diff:>15.3g}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
