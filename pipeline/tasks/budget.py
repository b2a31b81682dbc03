"""A tabular run inside its time limit (``--time-limit``, ``TIME=``): what the plan keeps and cuts.

Before the CV, one probe fits the features and every member on a sample of the training rows and
times them. Scaled to a fold's rows (cost grows about linearly in rows, and a booster's or a net's
in iterations or epochs), that gives each member's cost per fit in the worst case: a booster runs
to its ``max_iter`` ceiling, a net to its ``epochs`` ceiling. A run costs ``folds x repeats``
fits and the refit on every row (``folds / (folds - 1)`` of a fold). While that overruns the
share of the time left that the plan may use (``PLANNED_SHARE``: the probe's estimate misses
costs), it cuts, in this order, and says each cut:

1. repeats, down to one;
2. folds, down to 3;
3. the members with a time ceiling (the torch nets, ``max_seconds``): each fit gets its share of
   what the others leave, or the member goes when its share is under ``MIN_EPOCHS`` epochs;
4. the boosters' iterations (``max_iter``), down to ``MIN_ITERATIONS``;
5. folds, down to 2.

The CV then stops early at a fold boundary when the time it has measured says that another fold
and the refit would overrun (``Plan.deadline``; ``pipeline.tasks.kfold``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.tabular import auto_batch_size
from pipeline.console import say
from pipeline.tasks import kfold

PLANNED_SHARE = 0.7  # of the time left: the plan's target; the rest absorbs the estimate's misses
RESERVED_SHARE = 0.05  # of the whole limit, kept for predicting, writing and logging the model ...
RESERVED_SECONDS = 10.0  # ... and at least this: MLflow's model logging and registry take seconds
PROBE_ROWS = (2000, 20_000)  # the probe's sample: 5% of the rows, within these bounds
PROBE_ITERATIONS = 30  # a booster's probe fit: iterations enough to time one
PROBE_EPOCHS = 2
MIN_EPOCHS = 10  # a net allowed fewer epochs per fit than this leaves the ensemble
MIN_ITERATIONS = 50


@dataclass
class Cost:
    """A member's seconds per fit on a fold's rows: ``fixed + per_step * steps``."""

    fixed: float
    per_step: float = 0.0
    steps: int = 0  # the ceiling: max_iter or epochs
    knob: str | None = None  # "max_iter", "max_seconds" or None (a fixed cost)

    @property
    def worst(self) -> float:
        return self.fixed + self.per_step * self.steps


def _knob(model) -> str | None:
    params = model.get_params()
    if "max_seconds" in params:
        return "max_seconds"
    if "max_iter" in params and "learning_rate" in params:  # a booster's rounds, not a solver's iterations
        return "max_iter"
    return None


def probe(comp, X: pd.DataFrame, y: pd.Series, members: dict[str, dict], metric) -> tuple[float, dict[str, Cost]]:
    """Seconds per fold for the features, and each member's :class:`Cost`, from fits on a sample."""
    rows = int(np.clip(len(X) // 20, *PROBE_ROWS))
    fold_rows = len(X) * (comp.cv.folds - 1) / comp.cv.folds
    if rows >= fold_rows:
        rows = int(fold_rows)
    scale = fold_rows / rows
    sample = np.random.default_rng(comp.cv.seed).choice(len(X), size=rows, replace=False)
    X_probe, y_probe = X.iloc[sample], y.iloc[sample]
    forward = kfold.TARGET_TRANSFORMS.get(comp.target_transform, (None,))[0]
    target = forward(y_probe.to_numpy()) if forward else y_probe.to_numpy()
    started = time.perf_counter()
    matrix = kfold.build_features(comp).fit_transform(X_probe, target)
    features = (time.perf_counter() - started) * scale * 1.25  # fit on a fold, transform its held-out rows
    costs = {}
    for name, params in members.items():
        model = kfold.create_model(name, params)
        knob = _knob(model)
        if knob == "max_iter":
            steps = model.get_params()["max_iter"]
            model.set_params(max_iter=min(steps, PROBE_ITERATIONS), **_without_early_stopping(model))
        elif knob == "max_seconds":
            steps = model.get_params()["epochs"]
            model.set_params(epochs=min(steps, PROBE_EPOCHS), **_without_early_stopping(model))
            if model.get_params().get("batch_size") == "auto":  # the fold's batch: the cost per row depends on it
                model.set_params(batch_size=auto_batch_size(int(fold_rows)))
        measured = _fit_seconds(model, matrix, target)
        seconds = measured * scale
        if knob == "max_iter":
            costs[name] = Cost(0.0, _iteration_seconds(model, measured, matrix, target, fold_rows), steps, knob)
        elif knob == "max_seconds":
            costs[name] = Cost(0.0, seconds / min(steps, PROBE_EPOCHS), steps, knob)
        else:
            costs[name] = Cost(seconds * 1.5, knob=None)  # a solver may need more iterations on more rows
    return features, costs


def _iteration_seconds(model, measured: float, matrix, target, fold_rows: float) -> float:
    """A booster's seconds per iteration on ``fold_rows`` rows, from ``model`` (just fit on every
    row of ``matrix``, in ``measured`` seconds) and a second fit on half of them: ``fixed + per_row * rows``. Scaled in
    proportion instead, the fixed part (the split search, thread start-ups) is multiplied with
    the rows, and a booster on a 2,000-row probe was priced several times too dear."""
    def per_iteration(fitted, seconds: float) -> float:
        return seconds / max(1, getattr(fitted, "n_iter_", PROBE_ITERATIONS))

    full = per_iteration(model, measured)
    half = len(matrix) // 2
    small = per_iteration(model, _fit_seconds(model, matrix[:half], target[:half]))
    per_row = max(full - small, 0.0) / (len(matrix) - half)
    return max(full, small) + per_row * max(fold_rows - len(matrix), 0.0)


def _fit_seconds(model, X, y) -> float:
    started = time.perf_counter()
    kfold.fit_model(model, X, y)
    return time.perf_counter() - started


def _without_early_stopping(model) -> dict:
    return {"early_stopping": False} if "early_stopping" in model.get_params() else {}


@dataclass
class Fitted:
    """What fits the time limit: the members' params (capped), folds, repeats, and the cuts made."""

    members: dict[str, dict]
    folds: int
    repeats: int
    cuts: list[str]


def fit(comp, members: dict[str, dict], features: float, costs: dict[str, Cost], seconds: float) -> Fitted:
    """The plan of the module's docstring, for ``seconds`` of run time left."""
    goal = PLANNED_SHARE * seconds
    folds, repeats, cuts = comp.cv.folds, comp.cv.repeats, []
    members, costs = dict(members), dict(costs)

    def fits() -> float:
        return folds * repeats + folds / (folds - 1)

    def total() -> float:
        return fits() * (features + sum(cost.worst for cost in costs.values()))

    while repeats > 1 and total() > goal:
        repeats -= 1
    if repeats != comp.cv.repeats:
        cuts.append(f"repeats {comp.cv.repeats} -> {repeats}")
    if total() > goal and folds > 3:
        cuts.append(f"folds {folds} -> 3")
        folds = 3
    timed = [name for name, cost in costs.items() if cost.knob == "max_seconds"]
    if timed and total() > goal:
        others = fits() * (features + sum(cost.worst for name, cost in costs.items() if name not in timed))
        share = (goal - others) / fits() / len(timed)
        for name in timed:
            if share < MIN_EPOCHS * costs[name].per_step:
                cuts.append(f"{name} left out (a fit needs {costs[name].worst:.0f} s, "
                            f"{MIN_EPOCHS} epochs {MIN_EPOCHS * costs[name].per_step:.0f} s; {max(share, 0):.0f} s left)")
                del members[name], costs[name]
            else:
                members[name] = {**members[name], "max_seconds": round(share, 1)}
                costs[name] = Cost(share)
                cuts.append(f"{name} at most {share:.0f} s per fit")
    boosted = [name for name, cost in costs.items() if cost.knob == "max_iter"]
    for extra_folds in (False, True):
        if not boosted or total() <= goal:
            break
        if extra_folds and folds > 2:
            cuts.append(f"folds {folds} -> 2")
            folds = 2
        others = fits() * (features + sum(cost.worst for name, cost in costs.items() if name not in boosted))
        per_iteration = fits() * sum(costs[name].per_step for name in boosted)
        iterations = int(max(MIN_ITERATIONS, (goal - others) / per_iteration))
        for name in boosted:
            if iterations < costs[name].steps:
                cuts.append(f"{name} max_iter {costs[name].steps} -> {iterations}")
                members[name] = {**members[name], "max_iter": iterations}
                costs[name] = Cost(0.0, costs[name].per_step, iterations, "max_iter")
    return Fitted(members, folds, repeats, cuts)


def report(limit: float, left: float, fitted: Fitted) -> None:
    if fitted.cuts:
        say(f"time limit {limit:.0f} s ({left:.0f} s left): " + "; ".join(fitted.cuts))
    else:
        say(f"time limit {limit:.0f} s ({left:.0f} s left): the whole plan fits")
