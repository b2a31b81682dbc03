"""Ensembles from out-of-fold predictions: a weighted average whose weights are learned outside.

Every way of learning the weights gives a linear combination:
- ``blend``: non-negative weights that sum to one, least squares on the OOF predictions;
- ``stack``: a linear meta-learner with non-negative coefficients and an intercept.
Classifiers' OOF predictions are probabilities (binary: P(positive), ``(n, models)``; several
classes: ``(n, models, classes)``) and ``y`` the class indices: ``proba_blend_weights`` puts the
weights on the simplex too, so the blend stays a probability, by log loss or by a given loss
(``proba_select_weights``: its corner, the best member alone).
``greedy_weights`` is Caruana et al.'s ensemble selection (2004), as AutoGluon builds its
weighted ensemble: members added one at a time, with replacement, each time the one that most
lowers the loss of the running average; the weights are the counts. It suits values and
probabilities alike, and any loss, the competition's metric included.
``cross_fit`` scores any of them honestly: the weights used for each fold's rows are learned on
the other folds' rows only. ``select`` is the one place that cross-fits several methods, keeps the
better and learns its weights on every row: the tabular task and ``blend`` both use it.

``FoldBag`` and ``PrefitEnsemble`` are what k-fold training leaves: each fold's fitted pipeline,
averaged (bagging), and the selected members' bags combined by their weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if

from models.targets import forward_inverse

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


GREEDY_ROUNDS = 25  # members added (with replacement): AutoGluon's ensemble_size
GREEDY_MAX_ROWS = 200_000  # rows the greedy search scores (a seeded sample beyond): each round
# scores every member, and a metric such as AUC sorts the rows every time


def greedy_weights(predictions: np.ndarray, y: np.ndarray,
                   loss: Callable[[np.ndarray, np.ndarray], float] | None = None,
                   rounds: int = GREEDY_ROUNDS) -> Combination:
    """Caruana's ensemble selection: ``rounds`` times add the member (with replacement) whose
    addition gives the running average the lowest ``loss(y, average)`` (lower is better; default
    squared error, or log loss for probabilities); weights = counts / rounds, on the simplex.
    Ties go to the earlier member, so the result is deterministic."""
    if loss is None:
        loss = _default_loss(predictions)
    n_models = predictions.shape[1]
    if len(y) > GREEDY_MAX_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(len(y), GREEDY_MAX_ROWS, replace=False))
        predictions, y = predictions[rows], y[rows]
    counts = np.zeros(n_models, dtype=int)
    total = np.zeros_like(np.take(predictions, 0, axis=1), dtype=float)
    for step in range(1, rounds + 1):
        trial = [loss(y, (total + np.take(predictions, m, axis=1)) / step) for m in range(n_models)]
        best = int(np.argmin(trial))
        counts[best] += 1
        total += np.take(predictions, best, axis=1)
    return counts / counts.sum(), 0.0


def _default_loss(predictions: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    """Log loss for class columns ``(n, models, classes)``; squared error otherwise (binary
    probabilities need their loss given: a value in [0, 1] may be a regression's too)."""
    if predictions.ndim == 3:
        return lambda y, p: float(-np.mean(np.log(np.clip(p[np.arange(len(y)), np.asarray(y, dtype=int)], EPS, 1.0))))
    return lambda y, p: float(np.mean((p - y) ** 2))


METHODS["select"] = greedy_weights

# Classifiers' probabilities: ``(predictions, y, loss) -> (weights, 0.0)``, weights on the simplex.
PROBA_METHODS: dict[str, Callable[..., Combination]] = {
    "blend": proba_blend_weights,
    "best_member": proba_select_weights,
    "select": greedy_weights,
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


@dataclass
class Selection:
    """What ``select`` chose: the method, its weights and intercept learned on every fit row, and
    the cross-fitted out-of-fold combination with its score (each fold combined by weights
    learned on the other folds only: the honest score of the selection)."""

    method: str
    weights: np.ndarray
    intercept: float
    oof: np.ndarray
    score: float
    scores: dict[str, float]  # each method tried: its cross-fitted score on the fit rows


def select(predictions: np.ndarray, y: np.ndarray, folds: np.ndarray, methods: dict[str, Callable[..., Combination]],
           score: Callable[[np.ndarray, np.ndarray], float], greater_is_better: bool, *,
           fit_rows: np.ndarray | None = None, target: np.ndarray | None = None,
           inverse: Callable[[np.ndarray], np.ndarray] | None = None) -> Selection:
    """Cross-fit each of ``methods`` (``(predictions, target) -> (weights, intercept)``) on the
    out-of-fold ``predictions``, keep the one whose cross-fitted combination ``score``s best on
    ``fit_rows`` (default all), and learn its weights on every fit row.

    ``target``: what the weights are learned against (default ``y``; a transformed target for a
    regression on log prices); ``inverse`` maps a combination back to ``y``'s scale for scoring.
    ``score(y, combined)`` is the competition's metric."""
    fit_rows = np.ones(len(y), dtype=bool) if fit_rows is None else np.asarray(fit_rows, dtype=bool)
    target = y if target is None else target
    back = (lambda v: v) if inverse is None else inverse
    candidates, scores = {}, {}
    for name, method in methods.items():
        oof = back(cross_fit(predictions, target, folds, method, fit_rows))
        candidates[name], scores[name] = oof, score(y[fit_rows], oof[fit_rows])
    better = max if greater_is_better else min
    chosen = better(scores, key=scores.get)
    weights, intercept = methods[chosen](predictions[fit_rows], target[fit_rows])
    return Selection(chosen, np.asarray(weights, dtype=float), float(intercept), candidates[chosen],
                     scores[chosen], scores)


def _inverse_of(target_transform: str | None) -> Callable[[np.ndarray], np.ndarray]:
    return forward_inverse(target_transform)[1]


class FoldBag(BaseEstimator):
    """The k fitted fold pipelines of one model, averaged: ``predict`` (values, in the space they
    were trained in) and, for classifiers, ``predict_proba`` (columns in ``classes_`` order; a
    fold that lacked a class gives it 0)."""

    def __init__(self, estimators: Sequence[object]):
        self.estimators = estimators

    def fit(self, X=None, y=None):
        """Already fit (each fold's model on its own rows): a no-op, as scikit-learn's
        ``FrozenEstimator`` does, so that the bag can end a ``Pipeline``."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def _is_classifier(self) -> bool:
        return all(hasattr(e, "predict_proba") and hasattr(e, "classes_") for e in self.estimators)

    @property
    def classes_(self) -> np.ndarray:
        return np.unique(np.concatenate([np.asarray(e.classes_) for e in self.estimators]))

    def _outputs(self, X, method: str):
        """Each estimator with its ``method``'s output on ``X``. Pipelines that share their
        feature steps (a fold's seeds: one fitted set of steps, and one after unpickling too)
        transform ``X`` once: 50 seeds are 50 models but 5 transforms."""
        transformed: dict[tuple[int, ...], object] = {}
        for estimator in self.estimators:
            if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
                key = tuple(id(step) for _, step in estimator.steps[:-1])
                if key not in transformed:
                    transformed[key] = estimator[:-1].transform(X)
                yield estimator, getattr(estimator.steps[-1][1], method)(transformed[key])
            else:
                yield estimator, getattr(estimator, method)(X)

    @available_if(_is_classifier)
    def predict_proba(self, X) -> np.ndarray:
        classes = self.classes_
        proba = np.zeros((len(X), len(classes)))
        for estimator, output in self._outputs(X, "predict_proba"):
            proba[:, np.searchsorted(classes, estimator.classes_)] += output
        return proba / len(self.estimators)

    def predict(self, X) -> np.ndarray:
        if self._is_classifier():
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        # One row may come back as a scalar (a net squeezes its output): one value per row, always.
        return np.mean([np.asarray(output, dtype=float).reshape(len(X)) for _, output in self._outputs(X, "predict")],
                       axis=0)


class PrefitEnsemble(BaseEstimator):
    """Fitted members (``FoldBag``s) combined by weights: ``intercept + sum w_i * member_i``, for
    regressors in the space they were trained in, then ``target_transform``'s inverse; for
    classifiers their probabilities (weights on the simplex keep them probabilities). ``predict``
    of two classes calls the second above ``threshold`` (``models.decision``)."""

    def __init__(self, members: Sequence[tuple[str, object]], weights: Sequence[float], intercept: float = 0.0,
                 target_transform: str | None = None, threshold: float = 0.5):
        self.members = members
        self.weights = weights
        self.intercept = intercept
        self.target_transform = target_transform
        self.threshold = threshold

    def fit(self, X=None, y=None):
        """The members are fit already: a no-op (see ``FoldBag.fit``)."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def _is_classifier(self) -> bool:
        return all(hasattr(m, "predict_proba") for _, m in self.members)

    @property
    def classes_(self) -> np.ndarray:
        return np.unique(np.concatenate([np.asarray(m.classes_) for _, m in self.members]))

    def _used(self):
        return [(m, w) for (_, m), w in zip(self.members, self.weights, strict=True) if w > 0]

    def used_names(self) -> list[str]:
        """The members of positive weight, in order: those ``member_outputs`` gives."""
        return [name for (name, _), w in zip(self.members, self.weights, strict=True) if w > 0]

    def member_outputs(self, X) -> list[np.ndarray]:
        """Each member of positive weight's own predictions: probabilities in ``classes_`` order
        (0 for a class it never saw), or values in the space it was trained in."""
        if not self._is_classifier():
            return [np.asarray(member.predict(X), dtype=float) for member, _ in self._used()]
        classes, outputs = self.classes_, []
        for member, _ in self._used():
            proba = np.zeros((len(X), len(classes)))
            proba[:, np.searchsorted(classes, member.classes_)] = member.predict_proba(X)
            outputs.append(proba)
        return outputs

    def combine(self, outputs: Sequence[np.ndarray], X=None) -> np.ndarray:
        """``member_outputs(X)`` combined: probabilities, or values through the target's inverse
        (``X``, the rows, for a combination that also reads them: ``models.stacking``)."""
        combined = sum(weight * output for (_, weight), output in zip(self._used(), outputs, strict=True))
        if self._is_classifier():  # rows summing to 1 in float64: a net's float32 softmax drifts by 1e-7
            return combined / combined.sum(axis=1, keepdims=True)
        return _inverse_of(self.target_transform)(combined + self.intercept)

    @available_if(_is_classifier)
    def predict_proba(self, X) -> np.ndarray:
        return self.combine(self.member_outputs(X))

    def predict(self, X) -> np.ndarray:
        if self._is_classifier():
            proba = self.predict_proba(X)
            if proba.shape[1] == 2:
                return self.classes_[(proba[:, 1] > self.threshold).astype(int)]
            return self.classes_[np.argmax(proba, axis=1)]
        return self.combine(self.member_outputs(X))
