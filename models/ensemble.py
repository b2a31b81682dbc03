"""Ensembles from out-of-fold predictions: a weighted average whose weights are learned outside.

Both ways of learning the weights give a linear combination, so one estimator serves both:
- ``blend``: non-negative weights that sum to one, least squares on the OOF predictions;
- ``stack``: a linear meta-learner with non-negative coefficients and an intercept.
``cross_fit`` scores either honestly: the weights used for each fold's rows are learned on the
other folds' rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import LinearRegression
from sklearn.utils.validation import check_is_fitted

Combination = tuple[np.ndarray, float]  # (weights, intercept)


def blend_weights(predictions: np.ndarray, y: np.ndarray) -> Combination:
    """Weights on the simplex (w >= 0, sum w = 1) minimising the squared error of ``P @ w``."""
    n_models = predictions.shape[1]
    result = minimize(
        lambda w: np.mean((predictions @ w - y) ** 2),
        np.full(n_models, 1.0 / n_models),
        jac=lambda w: 2 * predictions.T @ (predictions @ w - y) / len(y),
        bounds=[(0.0, 1.0)] * n_models,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},  # the default tolerance stops at the start point
    )
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum(), 0.0


def stack_weights(predictions: np.ndarray, y: np.ndarray) -> Combination:
    """A linear meta-learner: non-negative coefficients plus an intercept."""
    meta = LinearRegression(positive=True).fit(predictions, y)
    return meta.coef_, float(meta.intercept_)


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], Combination]] = {
    "blend": blend_weights,
    "stack": stack_weights,
}


def cross_fit(
    predictions: np.ndarray, y: np.ndarray, folds: np.ndarray, method: str, fit_rows: np.ndarray | None = None
) -> np.ndarray:
    """Out-of-fold ensemble predictions: each fold combined with weights learned on the others.

    ``fit_rows`` (a boolean mask) limits the rows the weights are learned from, as outliers
    excluded from training are; every row is still predicted.
    """
    combine = METHODS[method]
    usable = np.ones(len(y), dtype=bool) if fit_rows is None else fit_rows
    out = np.empty(len(y))
    for fold in np.unique(folds):
        held = folds == fold
        learn = ~held & usable
        weights, intercept = combine(predictions[learn], y[learn])
        out[held] = predictions[held] @ weights + intercept
    return out


class WeightedEnsemble(RegressorMixin, BaseEstimator):
    """``intercept + sum(weight_i * estimator_i.predict(X))``, each estimator fit on the same data."""

    def __init__(self, estimators: Sequence[tuple[str, object]], weights: Sequence[float], intercept: float = 0.0):
        self.estimators = estimators
        self.weights = weights
        self.intercept = intercept

    def fit(self, X, y):
        if len(self.estimators) != len(self.weights):
            raise ValueError("WeightedEnsemble needs one weight per estimator")
        self.estimators_ = [
            (name, clone(estimator).fit(X, y)) for (name, estimator), weight in zip(self.estimators, self.weights, strict=True)
            if weight > 0
        ]
        self.weights_ = np.array([w for w in self.weights if w > 0], dtype=float)
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        stacked = np.column_stack([estimator.predict(X) for _, estimator in self.estimators_])
        return stacked @ self.weights_ + self.intercept
