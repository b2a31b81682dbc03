"""A k-fold result as the stages see it (:class:`CVResult`), from the one loop's records: one
configuration's (:class:`~pipeline.tasks.configuration.Fitted`) or a portfolio's selected
ensemble (:class:`~pipeline.tasks.portfolio.Outcome`), each scored on the rows the plan keeps."""

from __future__ import annotations

import numpy as np

from models import decision
from models import ensemble as ensembles
from pipeline.metrics import Metric
from pipeline.tasks import kfold, portfolio
from pipeline.tasks.base import CVResult
from pipeline.tasks.configuration import Fitted


def of_configuration(one: Fitted, inverse, run: portfolio.Portfolio) -> CVResult:
    """One configuration's k-fold result, its predictions on the target's own scale; rows its
    folds did not cover (the time limit cut it) are held out by no fold (-1)."""
    folds = np.where(one.covered, run.folds, -1)
    repeats = ([CVResult(inverse(oof), [], run.score(oof), folds) for oof in one.repeat_oofs]
               if len(one.repeat_oofs) > 1 else [])
    return CVResult(inverse(one.oof), one.fold_scores, one.score, folds, one.histories, one.seconds, repeats=repeats,
                    rows=int((one.covered & run.scored).sum()))


def of_outcome(outcome: portfolio.Outcome, inverse, metric: Metric, run: portfolio.Portfolio,
                     target_transform: str | None, proba: bool) -> CVResult:
    """The selected ensemble: its cross-fitted out-of-fold predictions and score (on the rows the
    plan scores, as every member's), its weights, and the fold models behind them."""
    selection, fitted = outcome.selection, outcome.fitted
    covered = fitted[0].covered  # a cut configuration stands alone (Portfolio.run)
    folds = np.where(covered, outcome.folds, -1)
    y = run.y_true
    oof = selection.oof
    weights = selection.weights
    scored = run.scored & covered
    threshold, called = decision.NEUTRAL, oof
    if run.decides:  # F1: each fold's rows called (1: positive) with the threshold chosen on the other folds
        threshold = kfold.threshold(metric, y[scored], oof[scored])
        called = oof.copy()
        called[scored] = decision.cross_fitted(oof[scored], y[scored] == metric.classes[1], folds[scored], metric.name)
    fold_scores = [kfold.score(metric, y[scored & (folds == k)], called[scored & (folds == k)], proba)
                   for k in np.unique(folds[folds >= 0])]
    repeats = []
    if len(fitted[0].repeat_oofs) > 1:
        for r in range(len(fitted[0].repeat_oofs)):
            combined = ensembles.combine(np.stack([f.repeat_oofs[r] for f in fitted], axis=1), weights,
                                         selection.intercept)
            repeats.append(CVResult(inverse(combined), [], run.score_on(combined, scored), folds))
    # Only the members with weight: a member of none predicts nothing, and its fold models (10 bagged
    # ExtraTrees on 22k rows are a gigabyte) would be pickled into the MLflow model all the same.
    kept = [(f.config.name, f.bag, w) for f, w in zip(fitted, weights, strict=True) if w > 0]
    final = ensembles.PrefitEnsemble([(name, bag) for name, bag, _ in kept], [w for *_, w in kept],
                                     selection.intercept, None if proba else target_transform, threshold)
    score = fitted[0].score if len(fitted) == 1 else run.score(oof, covered) if proba else kfold.score(
        metric, y[scored], oof[scored], proba)
    return CVResult(oof, fold_scores if len(fitted) > 1 else fitted[0].fold_scores, score, folds,
                    seconds=sum(f.seconds + f.bag_seconds for f in fitted), final=final, fitted=final,
                    weights={f.config.name: float(w) for f, w in zip(fitted, weights, strict=True)},
                    repeats=repeats, members=fitted, rows=int(scored.sum()), finished=outcome.finished)
