"""What a tabular run leaves for the competitor to look at, built from the portfolio's records:
the model leaderboard, the boosters' gain importance, and the out-of-fold figures of a classifier
(scikit-learn's display classes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline import importance, model_board, plots, tracking


def log_portfolio(outcome, result, plan, test_rows: int, extra: Sequence[model_board.Row] = ()) -> pd.DataFrame:
    """The leaderboard of ``outcome`` (``portfolio.Outcome``) and ``result`` (the final model's
    ``CVResult``), with the ``extra`` rows (the stack's), logged with the gain importance of its
    boosters; the leaderboard is returned, to print last."""
    weights = result.weights or {}
    final = None
    if len(plan.members) > 1:
        kept = [f for f in outcome.fitted if weights.get(f.config.name, 0) > 0]
        final = model_board.finished_row(plan.model, result.score, result.fold_scores, result.seconds,
                                          sum(f.predict_seconds for f in kept), test_rows, bags=None, status="final")
    board = model_board.from_portfolio(outcome, weights, test_rows, final=final,
                                       greater_is_better=plan.metric.greater_is_better, extra=extra)
    tracking.log_frame(board, model_board.ARTIFACT)
    gains = importance.gain([(f.config.name, f.bag.estimators, weights.get(f.config.name, 0.0))
                             for f in outcome.fitted])
    if gains is not None:
        importance.log(gains, f"{plan.model}: the boosters' gain (share of the total)")
    return board


def log_classification_figures(actual: pd.Series, proba: np.ndarray, classes, title: str) -> None:
    for name, figure in plots.classification_figures(actual.to_numpy(), proba, classes, title=title).items():
        tracking.log_figure(figure, name)
