"""The second layer's variants on tables of the suite: the first configurations of the default
portfolio fit without a time limit, then the stack over their ensemble with the original features
beside the level-one predictions and without; for each, the cross-fitted score, the holdout
check's figures and decision, and the score on the held-back test labels, beside the level-one
ensemble's.

    .venv/bin/python bench/stack_variants.py --tasks hotel_price,caravan --configs 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from pipeline import config
from pipeline import predictions as predictions_io
from pipeline.tasks import for_competition, kfold, results, stack

DATA = Path(__file__).resolve().parent / ".data"  # --data: elsewhere


def test_score(folder: Path, data, plan, fitted) -> float:
    """``fitted``'s predictions of the test rows, as the submission holds them, against the labels."""
    metric, comp = plan.metric, plan.comp
    X_test = data.test.drop(columns=[comp.id])
    _, combined = predictions_io.member_predictions(fitted, X_test, "model", comp.target_transform)
    if metric.classes is not None:
        combined = kfold.shaped(combined, fitted.classes_, metric)
        combined = combined if metric.needs_proba else kfold.as_labels(combined, metric)
    labels = pd.read_csv(folder / comp.name / "test_labels.csv")
    truth = labels.set_index(comp.id)[comp.target].loc[data.test[comp.id].to_numpy()].to_numpy()
    return metric.score(truth, combined)


def one(folder: Path, name: str, configs: int) -> None:
    info = json.loads((folder / name / "task.json").read_text())
    comp = config.load(name, target=info["target"], id_column=info["id"], metric=info["metric"])
    task = for_competition(comp)
    data = task.load(folder / name)
    plan = task.plan(data)
    comp = plan.comp  # with the target transform the plan chose (log1p where RMSLE scores)
    run = task._portfolio(data, plan)
    run.configs = run.configs[:configs]
    started = time.perf_counter()
    outcome = run.run()
    inverse = (lambda v: v) if run.proba else run.inverse
    level_one = results.of_outcome(outcome, inverse, plan.metric, run, comp.target_transform, run.proba)
    print(f"{name}: {', '.join(f.config.name for f in outcome.fitted)} in {time.perf_counter() - started:.0f} s; "
          f"ensemble cv {level_one.score:.5f} test {test_score(folder, data, plan, level_one.fitted):.5f}", flush=True)
    for passthrough in (True, False):
        started = time.perf_counter()
        stacked = stack.level_two(run, outcome, passthrough=passthrough)
        fitted = stack.applied(results.of_outcome(outcome, inverse, plan.metric, run, comp.target_transform,
                                                  run.proba), stacked, outcome, run, comp.target_transform).fitted
        blended = run.select([*outcome.fitted, SimpleNamespace(oof=stacked.oof)])
        print(f"  stack {'with' if passthrough else 'without'} the features: cv {stacked.score:.5f} "
              f"test {test_score(folder, data, plan, fitted):.5f} in {time.perf_counter() - started:.0f} s; "
              f"{stacked.reason}; the stack as one more member of the selection: cv {blended.score:.5f} "
              f"(its weight {blended.weights[-1]:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="hotel_price,caravan,cps1988_wage,telco_churn")
    parser.add_argument("--configs", type=int, default=4, help="the portfolio's first N configurations")
    parser.add_argument("--data", type=Path, default=DATA, help="the suite's folder (bench/.data)")
    args = parser.parse_args()
    for name in args.tasks.split(","):
        one(args.data, name, args.configs)


if __name__ == "__main__":
    main()
