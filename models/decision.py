"""The decision threshold of a binary classifier scored on labels (F1): the probability above
which a row is called positive, chosen on out-of-fold predictions.

A metric of labels rewards the calibrated probabilities' own cut (0.5) only where it is accuracy.
F1 on a quarter of positives wants far fewer missed positives: telco_churn, LightGBM 5-fold, F1
0.558 at 0.5 and 0.622 at thresholds chosen on the other folds (0.25-0.27); on the held-back test
labels 0.616 -> 0.651. AutoGluon calibrates its decision threshold for such metrics likewise.

The score of a chosen threshold is cross-fitted (:func:`cross_fitted`): each fold's rows are called
with the threshold chosen on the other folds, so that choosing it does not flatter the figure.
Every threshold of :data:`GRID` is scored at once from the confusion counts (:data:`SCORES`: the
metrics this applies to, each as a function of them).
"""

from __future__ import annotations

import numpy as np

GRID = np.round(np.linspace(0.01, 0.99, 99), 2)  # the thresholds tried
NEUTRAL = 0.5  # the calibrated probabilities' own cut: where there is nothing to choose on


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


# A metric's value from the counts (true and false positives, false and true negatives) of each threshold.
SCORES = {
    "f1": lambda tp, fp, fn, tn: _f1(tp, fp, fn),
    "macro_f1": lambda tp, fp, fn, tn: (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2,
}


def scores(probability: np.ndarray, positive: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` of the calls ``probability > t`` for each ``t`` of :data:`GRID`."""
    positives = np.sort(probability[positive])
    negatives = np.sort(probability[~positive])
    tp = (len(positives) - np.searchsorted(positives, GRID, side="right")).astype(float)
    fp = (len(negatives) - np.searchsorted(negatives, GRID, side="right")).astype(float)
    return SCORES[metric](tp, fp, len(positives) - tp, len(negatives) - fp)


def best_threshold(probability: np.ndarray, positive: np.ndarray, metric: str) -> float:
    """The threshold of :data:`GRID` whose calls score best on these rows; ties go to the one
    nearest 0.5, and no rows to 0.5."""
    if len(probability) == 0:
        return NEUTRAL
    values = scores(probability, positive, metric)
    best = np.flatnonzero(values >= values.max() - 1e-12)
    return float(GRID[best[np.argmin(np.abs(GRID[best] - NEUTRAL))]])


def cross_fitted(probability: np.ndarray, positive: np.ndarray, folds: np.ndarray, metric: str) -> np.ndarray:
    """Each row called (True: positive) with the threshold chosen on the rows of the other folds
    (0.5 where there are none)."""
    called = np.zeros(len(probability), dtype=bool)
    for k in np.unique(folds):
        held, others = folds == k, folds != k
        threshold = best_threshold(probability[others], positive[others], metric) if others.any() else NEUTRAL
        called[held] = probability[held] > threshold
    return called
