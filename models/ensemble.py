"""Ensembles from out-of-fold predictions: a weighted average whose weights are learned outside.

Both ways of learning the weights give a linear combination, so one estimator serves both:
- ``blend``: non-negative weights that sum to one, least squares on the OOF predictions;
- ``stack``: a linear meta-learner with non-negative coefficients and an intercept.
Classifiers' OOF predictions are probabilities (binary: P(positive), ``(n, models)``; several
classes: ``(n, models, classes)``) and ``y`` the class indices: ``proba_blend_weights`` puts the
weights on the simplex too, so the blend stays a probability, by log loss or by a given loss
(``proba_select_weights``: its corner, the best member alone).
``cross_fit`` scores any of them honestly: the weights used for each fold's rows are learned on
the other folds' rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import LinearRegression
from sklearn.utils.metaestimators import available_if
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
EPS = 1e-15  # log loss clips probabilities here, as scikit-learn's did


def combine(predictions: np.ndarray, weights: np.ndarray, intercept: float = 0.0) -> np.ndarray:
    """``intercept + sum_m weights[m] * predictions[:, m]``: values, P(positive) or class columns."""
    return np.tensordot(predictions, np.asarray(weights, dtype=float), axes=([1], [0])) + intercept


def _true_class(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each member's probability of each row's true class, ``(n, models)``."""
    y = np.asarray(y, dtype=int)
    if predictions.ndim == 2:  # binary: P(class 1)
        return np.where(y[:, None] == 1, predictions, 1.0 - predictions)
    return predictions[np.arange(len(y)), :, y]


def _simplex(z: np.ndarray) -> np.ndarray:
    w = np.exp(z - z.max())
    return w / w.sum()


def proba_blend_weights(predictions: np.ndarray, y: np.ndarray,
                        loss: Callable[[np.ndarray, np.ndarray], float] | None = None) -> Combination:
    """Weights on the simplex for probabilities: the log-loss minimum (SLSQP, exact gradient);
    with ``loss(y, blended)`` (lower is better, e.g. minus the AUC), then refined on that loss by
    Nelder-Mead over the simplex, kept only where it improves on the log-loss weights."""
    n_models = predictions.shape[1]
    truth = np.clip(_true_class(predictions, y), EPS, 1.0)

    def log_loss(w):
        return -np.mean(np.log(np.clip(truth @ w, EPS, None)))

    def gradient(w):
        return -truth.T @ (1.0 / np.clip(truth @ w, EPS, None)) / len(truth)

    result = minimize(log_loss, np.full(n_models, 1.0 / n_models), jac=gradient, bounds=[(0.0, 1.0)] * n_models,
                      constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},), method="SLSQP",
                      options={"ftol": 1e-12, "maxiter": 1000})
    weights = np.clip(result.x, 0.0, None)
    weights = weights / weights.sum()
    if loss is not None and n_models > 1:
        start = np.log(np.clip(weights, 1e-6, None))
        refined = minimize(lambda z: loss(y, combine(predictions, _simplex(z))), start, method="Nelder-Mead",
                           options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 200 * n_models})
        if refined.fun < loss(y, combine(predictions, weights)):
            weights = _simplex(refined.x)
    return weights, 0.0


def proba_select_weights(predictions: np.ndarray, y: np.ndarray,
                         loss: Callable[[np.ndarray, np.ndarray], float] | None = None) -> Combination:
    """All the weight on the one member with the lowest ``loss`` (default: log loss): the corner
    of the simplex, for when blending does not pay."""
    if loss is None:
        losses = -np.mean(np.log(np.clip(_true_class(predictions, y), EPS, 1.0)), axis=0)
    else:
        losses = np.array([loss(y, predictions[:, m]) for m in range(predictions.shape[1])])
    weights = np.zeros(predictions.shape[1])
    weights[int(np.argmin(losses))] = 1.0
    return weights, 0.0


# Classifiers' probabilities: ``(predictions, y, loss) -> (weights, 0.0)``, weights on the simplex.
PROBA_METHODS: dict[str, Callable[..., Combination]] = {
    "blend": proba_blend_weights,
    "select": proba_select_weights,
}


def cross_fit(
    predictions: np.ndarray, y: np.ndarray, folds: np.ndarray,
    method: str | Callable[[np.ndarray, np.ndarray], Combination], fit_rows: np.ndarray | None = None
) -> np.ndarray:
    """Out-of-fold ensemble predictions: each fold combined with weights learned on the others.

    ``method``: a name of ``METHODS`` or a function ``(predictions, y) -> (weights, intercept)``
    (``proba_blend_weights`` with its loss bound). ``fit_rows`` (a boolean mask) limits the rows
    the weights are learned from, as outliers excluded from training are; every row is still
    predicted.
    """
    learn_weights = METHODS[method] if isinstance(method, str) else method
    usable = np.ones(len(y), dtype=bool) if fit_rows is None else fit_rows
    out = np.empty((len(y), *predictions.shape[2:]))
    for fold in np.unique(folds):
        held = folds == fold
        learn = ~held & usable
        weights, intercept = learn_weights(predictions[learn], y[learn])
        out[held] = combine(predictions[held], weights, intercept)
    return out


def _classifiers(ensemble) -> bool:
    return all(hasattr(estimator, "predict_proba") for _, estimator in ensemble.estimators)


class WeightedEnsemble(RegressorMixin, BaseEstimator):
    """``intercept + sum(weight_i * estimator_i.predict(X))``, each estimator fit on the same data.

    Of classifiers (every estimator has ``predict_proba``): ``predict_proba`` is the weighted sum
    of theirs (columns in ``classes_`` order; weights on the simplex keep it a probability) and
    ``predict`` its most probable class.
    """

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
        if _classifiers(self):
            self.classes_ = np.unique(y)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if _classifiers(self):
            from sklearn.utils import ClassifierTags

            tags.estimator_type, tags.classifier_tags, tags.regressor_tags = "classifier", ClassifierTags(), None
        return tags

    @available_if(_classifiers)
    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        proba = np.zeros((len(X), len(self.classes_)))
        for (_, estimator), weight in zip(self.estimators_, self.weights_, strict=True):
            columns = np.searchsorted(self.classes_, estimator.classes_)
            proba[:, columns] += weight * estimator.predict_proba(X)
        return proba

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        if hasattr(self, "classes_"):
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        stacked = np.column_stack([estimator.predict(X) for _, estimator in self.estimators_])
        return stacked @ self.weights_ + self.intercept
