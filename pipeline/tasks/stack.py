"""A second layer over the portfolio's selected members, where a holdout check says it helps.

After selection, a level-two model (``models.stacking``: a regularised LightGBM on the members'
out-of-fold predictions beside the features) is fit k-fold on the run's folds: its out-of-fold
predictions are its cross-fitted score, computed as every member's is. That score is not enough
to decide: each level-two training row's level-one prediction came from fold models that saw the
rows the level-two model is scored on, and on about a quarter of data sets (autogluon#2779) the
stack scores better out of fold and worse on new rows ("stacked overfitting"). So the decision is
AutoGluon's dynamic stacking: hold a slice out of everything, the level-one fits included, fit the
whole stack on the rest, and compare on the slice. Here the slice is one of the run's folds: the
selected members are fit again on the other folds only (their k-1 folds as the inner folds), the
level-one ensemble's weights are chosen on those rows, the level-two model is fit on their
out-of-fold predictions, and the held-out fold is predicted as the test set will be (each member's
fold models averaged, then the level-two fold models). Nothing there ever saw the slice. The
stack is used when it beats the level-one ensemble in the cross-fitted score and on the slice
(AutoGluon's rule: stacked overfitting is a better validation score with a holdout score no
better), there on most bootstrap resamples of the slice's rows (``WIN_SHARE``), not only on the
one draw it is. A margin on the cross-fitted scores alone would not do: the leak inflates that
very score.

The reported score stays one honest figure: the cross-fitted score of what is submitted, the
stack's where it is used, the ensemble's where not; the slice's two figures are printed as the
check. The check costs the members' fits on (k-2)/k of the rows, k-1 times: it runs only when
the time left pays for it (and for the level-two model's own test predictions), else the stack
is not used. A limited run keeps ``RESERVE`` of its time for all this (``Portfolio.reserved``);
what the stack leaves of it, where it is not used, goes to more bags of the ensemble's members.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from models import stacking
from models.time_limit import MIN_FIT_SECONDS
from pipeline import model_board
from pipeline.console import say
from pipeline.tasks import kfold
from pipeline.tasks.portfolio import Outcome, Portfolio

NAME = "stack"  # the stack's line in the leaderboard and its scores
FEATURES = ("native", ())  # beside the level-one columns: LightGBM's own encoding, nothing crafted
HOLDOUT_FOLD = 0  # the run's fold the check holds out
CHECK_REPEAT = -1  # the inner folds' key in the run's fold features (its repeats are 0, 1, ...)
L2_SHARE = 0.25  # of the time left, what the level-two model's k fits may take
# One fold's rows decide: on a small table the stack wins there by chance as often as not (60 rows of
# noise: 12 of 40 seeds passed a plain comparison). So the win must hold on most bootstrap
# resamples of the fold's rows, not only on the draw the fold happens to be.
RESAMPLES = 200
WIN_SHARE = 0.8
RESERVE = 0.25  # of a limited run's time, what the portfolio leaves to the stack: AutoGluon gives its check 1/4


@dataclass
class Stack:
    """The level-two model: its cross-fitted out-of-fold predictions (the members' space) and
    score, its fold models, and the check: whether it is used and why."""

    oof: np.ndarray
    score: float
    fold_scores: list[float]
    level_two: list[tuple]
    seconds: float
    predict_seconds: float
    used: bool
    reason: str


def members_of(run: Portfolio, outcome: Outcome) -> list:
    """The selected members (positive weight): the level-one inputs of the stack."""
    return [f for f, w in zip(outcome.fitted, outcome.selection.weights, strict=True) if w > 0]


def level_two(run: Portfolio, outcome: Outcome, passthrough: bool = True) -> Stack | None:
    """The stack over ``outcome``'s selected members, checked; None where it cannot run (a member
    cut short, too few folds, no time)."""
    run.reserved = 0.0  # the time kept for the stack is its own now
    members = members_of(run, outcome)
    if not outcome.fitted[0].complete or run.comp.cv.folds < 3 or not members:
        return None
    if run.time_limit.limited and run._left() < MIN_FIT_SECONDS * run.comp.cv.folds:
        say(f"  {NAME}: not tried ({run._left():.0f} s of work left)")
        return None
    started = time.perf_counter()
    first = [split for split in run.splits if split[0] == 0]
    fit = _fit(run, [f.oof for f in members], [f.config.name for f in members], first, passthrough)
    if fit is None:
        say(f"  {NAME}: dropped (its folds did not fit in the time left)")
        return None
    oof, models, fold_scores, predict_seconds = fit
    score = run.score(oof)
    seconds = time.perf_counter() - started
    level_one = outcome.selection.score
    better = _better(run, score, level_one)
    if not better:
        reason = f"not used: cv {score:.5f} against the ensemble's {level_one:.5f}"
        return Stack(oof, score, fold_scores, models, seconds, predict_seconds, False, reason)
    price = sum(f.seconds / len(run.splits) for f in members) * (run.comp.cv.folds - 2) + 2 * seconds
    if run.time_limit.limited and price + predict_seconds > run._left():
        reason = f"not used: unchecked (the holdout check takes about {price:.0f} s, {run._left():.0f} s left)"
        return Stack(oof, score, fold_scores, models, seconds, predict_seconds, False, reason)
    checked = _holdout_check(run, outcome, members, passthrough)
    if checked is None:
        reason = "not used: the holdout check did not fit in the time left"
        return Stack(oof, score, fold_scores, models, seconds, predict_seconds, False, reason)
    alone, stacked, wins = checked
    used = wins >= WIN_SHARE
    reason = (f"{'used' if used else 'not used'}: on held-out fold {HOLDOUT_FOLD} (refit without it) the stack "
              f"{stacked:.5f}, the ensemble {alone:.5f}; the stack better in {wins:.0%} of resamples")
    return Stack(oof, score, fold_scores, models, time.perf_counter() - started, predict_seconds, used, reason)


def _better(run: Portfolio, one: float, other: float) -> bool:
    return one > other if run.metric.greater_is_better else one < other


def _fit(run: Portfolio, oofs: list[np.ndarray], names: list[str], splits: list[tuple],
         passthrough: bool) -> tuple | None:
    """The level-two model k-fold on ``splits``, on the members' out-of-fold ``oofs``: its
    out-of-fold predictions, fold models (features, model), fold scores and the seconds its fold
    models will take to predict the test set; None when the time ran out."""
    columns = stacking.level_one_columns(oofs, names)
    oof = np.zeros_like(oofs[0], dtype=float)
    models, fold_scores = [], []
    predict_seconds = 0.0
    budget = run.time_limit.within(run._left() * L2_SHARE) if run.time_limit.limited else None
    for done, (r, k, _, valid_idx) in enumerate(splits):
        extra = {}
        if budget is not None:
            if done and budget.elapsed() / done > budget.left():
                return None
            extra["time_limit"] = max(budget.left() / (len(splits) - done), MIN_FIT_SECONDS)
        fit_idx = run.features.fit_index[(r, k)]
        features, train, valid = run.features.get(FEATURES, (r, k), valid_idx) if passthrough else (None, None, None)
        model = _model(run, **extra)
        kfold.fit_model(model, stacking.joined(train, columns.iloc[fit_idx]), run.target[fit_idx])
        predicting = time.perf_counter()
        predictions = kfold.predict(model, stacking.joined(valid, columns.iloc[valid_idx]), run.metric,
                                    proba=run.proba or None)
        predict_seconds += (time.perf_counter() - predicting) * run.test_rows / len(valid_idx)
        if predictions.ndim == 2:
            predictions = predictions / predictions.sum(axis=1, keepdims=True)
        oof[valid_idx] = predictions
        fold_scores.append(run.score(oof, valid_idx))
        models.append((features, model))
    return oof, models, fold_scores, predict_seconds


def _model(run: Portfolio, **extra):
    name = "lightgbm_classifier" if run.proba else "lightgbm"
    loss = {"loss": "absolute_error"} if run.metric.name == "mae" else {}
    return kfold.create_model(name, {**stacking.LEVEL_TWO_PARAMS, **loss, **extra})


def _holdout_check(run: Portfolio, outcome: Outcome, members: list, passthrough: bool) -> tuple[float, float, float] | None:
    """The level-one ensemble's and the stack's scores on the held-out fold, everything refit on the
    other folds; None when a refit did not fit in the time left."""
    held = run.folds == HOLDOUT_FOLD
    inner = []
    for r, k, _, valid_idx in run.splits:
        if r != 0 or k == HOLDOUT_FOLD:
            continue
        train_idx = np.flatnonzero(~held & (run.folds != k))
        run.features.fit_index[(CHECK_REPEAT, k)] = train_idx[run.scored[train_idx]]
        inner.append((CHECK_REPEAT, k, train_idx, valid_idx))
    X_held = run.X.iloc[np.flatnonzero(held)]
    reasons, progress = dict(run.skipped_reasons), run.on_progress
    run.on_progress = None
    try:
        refits = [run.fit(f.config, splits=inner) for f in members]
    finally:
        run.skipped_reasons, run.on_progress = reasons, progress  # the check's drops are no configuration's
    if any(f is None for f in refits):
        return None
    held_outputs = [_bag_predictions(run, f.bag, X_held) for f in refits]
    rest = copy.copy(run)  # the same run, its weights chosen on the other folds' rows only
    rest.scored = run.scored & ~held
    selection = rest.select(refits)
    alone = np.zeros_like(members[0].oof, dtype=float)
    alone[held] = np.tensordot(np.stack(held_outputs, axis=1), selection.weights, axes=([1], [0])) + selection.intercept
    names = [f.config.name for f in members]
    fit = _fit(run, [f.oof for f in refits], names, inner, passthrough)
    if fit is None:
        return None
    final = stacking.StackedEnsemble([(n, f.bag) for n, f in zip(names, refits, strict=True)], np.ones(len(names)),
                                     level_two=fit[1])
    stacked = np.zeros_like(alone)
    combined = final.combine(held_outputs, X_held)
    stacked[held] = combined[:, 1] if combined.ndim == 2 and alone.ndim == 1 else combined
    rows = np.flatnonzero(held & run.scored)
    draws = np.random.default_rng(0).choice(rows, size=(RESAMPLES, len(rows)))
    wins = np.mean([_better(run, _score_rows(run, stacked, d), _score_rows(run, alone, d)) for d in draws])
    return _score_rows(run, alone, rows), _score_rows(run, stacked, rows), float(wins)


def _score_rows(run: Portfolio, predictions: np.ndarray, rows: np.ndarray) -> float:
    """The run's metric on ``rows`` (indices, repeats allowed) of out-of-fold ``predictions``."""
    values = predictions[rows] if run.proba else run.inverse(predictions[rows])
    return kfold.score(run.metric, run.y_true[rows], values, run.proba)


def _bag_predictions(run: Portfolio, bag, X) -> np.ndarray:
    """A member's fold models, averaged, on ``X``: as its out-of-fold predictions are (values in
    the space it was trained in, P(classes[1]), or class columns in the metric's order)."""
    predictions = kfold.predict(bag, X, run.metric, proba=run.proba or None)
    if predictions.ndim == 2:  # class columns: rows summing to 1 in float64, as in Portfolio.fit
        predictions = predictions / predictions.sum(axis=1, keepdims=True)
    return predictions


def rest_to_bags(run: Portfolio, outcome: Outcome, on_fitted) -> Outcome:
    """The time kept for the stack and not taken (it was not used) goes to more bags of the
    ensemble's members, as the portfolio's own time left does: the reserve costs nothing then."""
    if not outcome.fitted[0].complete:
        return outcome
    selection, bagged = run._bag_more(outcome.selection, on_fitted)
    return dataclasses.replace(outcome, fitted=run.fitted, selection=selection, finished=outcome.finished and bagged)


def applied(result, stack: Stack, outcome: Outcome, run: Portfolio, target_transform: str | None):
    """``result`` (the level-one ensemble's ``CVResult``) as the stack: its cross-fitted
    predictions and score, the one figure, and the final model with the level-two fold models."""
    members = members_of(run, outcome)
    weights = [w for w in outcome.selection.weights if w > 0]
    final = stacking.StackedEnsemble([(f.config.name, f.bag) for f in members], weights, outcome.selection.intercept,
                                     None if run.proba else target_transform,
                                     kfold.threshold(run.metric, run.y_true[run.scored], stack.oof[run.scored])
                                     if run.decides else 0.5, level_two=stack.level_two)
    inverse = (lambda v: v) if run.proba else run.inverse
    result.oof, result.score, result.fold_scores = inverse(stack.oof), stack.score, stack.fold_scores
    result.repeats = []  # the stack is fit on the first repeat's folds: its score is that one figure
    result.final = result.fitted = final
    result.seconds += stack.seconds
    return result


def board_row(stack: Stack, test_rows: int) -> model_board.Row:
    """The stack's line in the run's leaderboard, with the check's figures as its reason."""
    row = model_board.finished_row(NAME, stack.score, stack.fold_scores, stack.seconds, stack.predict_seconds,
                                   test_rows, bags=None)
    return dataclasses.replace(row, reason=stack.reason)
