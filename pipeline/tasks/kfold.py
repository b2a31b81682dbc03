"""The pieces of k-fold training that the one loop (``pipeline.tasks.portfolio.Portfolio.fit``)
is made of: building a model and its features, the folds, the rows a run learns from and
scores, fitting with the thread policy, predicting in chunks, and the metric on predictions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from features.crafted import CraftedFeatures
from features.engineering import make_feature_steps
from features.native import MAX_LEVELS, NativePreprocessor
from features.roles import ColumnRoles, infer_roles
from features.rules import RowRule
from features.tabular import TabularPreprocessor
from models import decision, registry, threads
from models.targets import TARGET_TRANSFORMS
from pipeline.config import Competition
from pipeline.errors import UserError
from pipeline.metrics import Metric


def create_model(name: str, params: dict):
    """The registered model ``name`` with ``params`` (over the registry's defaults)."""
    try:
        return registry.create(name, "tabular", **params)
    except TypeError as exc:
        raise UserError(f"model {name!r}: {exc}") from None


def role_options(comp: Competition) -> dict:
    """The column roles the config gives, and whether to guess those of ordinary columns."""
    return {"categorical": comp.categorical, "numeric": comp.numeric, "drop": comp.drop, "text": comp.text,
            "date": comp.date, "high_cardinality": comp.high_cardinality, "infer": comp.infer_roles}


def native_levels_differ(comp: Competition, X: pd.DataFrame) -> bool:
    """Whether ``native_levels`` features of ``X`` differ from ``native`` ones: whether it has a
    category of more levels than ``max_onehot`` and fewer than ``MAX_LEVELS``."""
    options = {**role_options(comp), "max_onehot_width": None}
    return infer_roles(X, **options) != infer_roles(X, **options, max_onehot=MAX_LEVELS - 1)


def build_features(comp: Competition, encoding: str = "onehot", crafted: tuple[str, ...] = ()) -> Pipeline:
    """The config's feature-engineering steps, then the column roles, then ``crafted``'s steps
    (:class:`features.crafted.CraftedFeatures`, where a portfolio configuration names some), then the preprocessor of
    ``encoding`` (:data:`models.registry.ENCODINGS`; a registry entry declares the one it takes). Native categories have no one-hot width to keep within:
    only a column of more than ``max_onehot`` levels goes to frequency and target encoding, and
    with ``native_levels`` only one of more than ``MAX_LEVELS - 1``, the most a native category
    keeps (hotel_price's agent, company and country, 95-160 levels: LightGBM's 5-fold MAE 8.258 ->
    8.174 and 8.135 -> 7.981 over two shuffles; flights' 104-level ``dest``: RMSE 15.72 -> 15.85).
    Either does better on some data: the portfolio has both, and the selection decides."""
    if encoding not in registry.ENCODINGS:
        raise ValueError(f"feature encoding {encoding!r}: one of {', '.join(registry.ENCODINGS)}")
    columns = {"categorical": comp.categorical, "numeric": comp.numeric, "drop": comp.drop}
    if encoding in ("native", "native_levels"):
        levels = {"max_onehot": MAX_LEVELS - 1} if encoding == "native_levels" else {}
        roles = ColumnRoles(**role_options(comp), max_onehot_width=None, **levels)
        preprocess = NativePreprocessor(**columns)
    else:
        roles = ColumnRoles(**role_options(comp))
        preprocess = TabularPreprocessor(**columns)
    try:
        steps = make_feature_steps(comp.features)
    except ValueError as exc:
        raise UserError(f"{comp.name} [features]: {exc}") from None
    steps.append(("roles", roles))
    if crafted:
        steps.append(("crafted", CraftedFeatures(steps=crafted, random_state=comp.cv.seed)))
    return Pipeline([*steps, ("preprocess", preprocess)])


def build_estimator(comp: Competition, model, encoding: str, crafted: tuple[str, ...] = ()):
    """``Pipeline(features of encoding..., model)``, inside the target transform when the config has one."""
    pipe = Pipeline([*build_features(comp, encoding, crafted).steps, ("model", model)])
    if comp.target_transform in TARGET_TRANSFORMS:
        forward, inverse = TARGET_TRANSFORMS[comp.target_transform]
        return TransformedTargetRegressor(regressor=pipe, func=forward, inverse_func=inverse, check_inverse=False)
    return pipe


def fit_model(model, X, y, on_epoch: Callable[[dict], None] | None = None):
    with threads.limit():  # the process's thread policy (models/threads.py)
        if on_epoch is not None and "on_epoch" in inspect.signature(model.fit).parameters:
            return model.fit(X, y, on_epoch=on_epoch)
        return model.fit(X, y)


def predict(model, X, metric: Metric, *, proba: bool | None = None, per_class: bool = False,
            chunk_rows: int | None = 50_000) -> np.ndarray:
    """Labels or values; with ``proba`` (default: the metric's need), probabilities with one column
    per class of ``metric.classes`` (a fold that lacked a class gives it 0), or for two classes
    P(classes[1]) alone unless ``per_class``.

    ``X`` (a frame or a matrix) goes through ``model`` ``chunk_rows`` rows at a time (``None``: all
    at once), so that a large test set never becomes one feature matrix; each row's prediction
    depends on that row alone, so the result is the same (to the rounding of a matrix product,
    whose summation order can depend on the number of rows)."""
    rows = X.shape[0]
    if chunk_rows and rows > chunk_rows:
        parts = [predict(model, X.iloc[start:start + chunk_rows] if isinstance(X, pd.DataFrame)
                         else X[start:start + chunk_rows], metric, proba=proba, per_class=per_class, chunk_rows=None)
                 for start in range(0, rows, chunk_rows)]
        return np.concatenate(parts)
    if not (metric.needs_proba if proba is None else proba):
        return np.asarray(model.predict(X))
    return shaped(model.predict_proba(X), getattr(model, "classes_", None), metric, per_class=per_class)


def shaped(probabilities: np.ndarray, known, metric: Metric, *, per_class: bool = False) -> np.ndarray:
    """``predict_proba``'s columns (classes ``known``) as ``metric.classes`` orders them, a class
    not known at 0; for two classes P(classes[1]) alone unless ``per_class``."""
    if metric.classes is not None and known is not None and list(known) != list(metric.classes):
        aligned = np.zeros((len(probabilities), len(metric.classes)))
        aligned[:, [metric.classes.index(c) for c in known]] = probabilities
        probabilities = aligned
    return probabilities[:, 1] if probabilities.shape[1] == 2 and not per_class else probabilities


def as_labels(predictions: np.ndarray, metric: Metric, threshold: float = 0.5) -> np.ndarray:
    """Probabilities (P(classes[1]), or one column per class) as the most probable class; of two,
    the second above ``threshold``."""
    classes = np.asarray(metric.classes)
    if predictions.ndim == 1:
        return classes[(predictions > threshold).astype(int)]
    return classes[np.argmax(predictions, axis=1)]


def decides(metric: Metric) -> bool:
    """Whether a binary classifier's decision threshold is chosen for ``metric`` (``models.decision``)."""
    return metric.name in decision.SCORES and metric.classes is not None and len(metric.classes) == 2


def threshold(metric: Metric, y_true: np.ndarray, probability: np.ndarray) -> float:
    """The decision threshold these out-of-fold P(classes[1]) score best with."""
    return decision.best_threshold(probability, y_true == metric.classes[1], metric.name)


def decided_score(metric: Metric, y_true: np.ndarray, probability: np.ndarray, folds: np.ndarray) -> float:
    """``metric`` of the labels called with each fold's threshold chosen on the other folds."""
    called = decision.cross_fitted(probability, y_true == metric.classes[1], folds, metric.name)
    return metric.score(y_true, np.asarray(metric.classes)[called.astype(int)])


def score(metric: Metric, y_true: np.ndarray, predictions: np.ndarray, proba: bool = False) -> float:
    """``metric`` on predictions; ``proba``: they are probabilities, made labels where it takes labels."""
    if proba and not metric.needs_proba:
        predictions = as_labels(predictions, metric)
    return metric.score(y_true, predictions)


def kept_rows(comp: Competition, X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """The one definition of the rows a run learns from and scores: every row but those the
    config's ``outliers`` rule matches. A row the config calls unrepresentative (house prices' two
    huge, cheap partial sales) neither trains a fold nor counts in a score: tune, submit, each
    model line, the ensemble and ``@champion`` all score these rows. The figure with them back in
    is logged under its own name (``cv_<metric>_with_outliers``)."""
    return ~outlier_mask(comp, X, y)


def drop_outliers(comp: Competition, X: pd.DataFrame, y: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    keep = kept_rows(comp, X, y)
    return X[keep], y[keep]


def outlier_mask(comp: Competition, X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    if not comp.outliers:
        return np.zeros(len(X), dtype=bool)
    try:
        return RowRule.parse(comp.outliers).mask(X.assign(**{comp.target: y.to_numpy()}))
    except ValueError as exc:
        raise UserError(f"{comp.name}: outliers: {exc}") from None


def splitter(comp: Competition, task: str, repeat: int = 0):
    """The k folds of repeat ``repeat``: each repeat reshuffles with its own seed."""
    seed = comp.cv.seed + repeat
    if task == "regression":
        return KFold(comp.cv.folds, shuffle=True, random_state=seed)
    return StratifiedKFold(comp.cv.folds, shuffle=True, random_state=seed)


def fit_all(comp: Competition, X: pd.DataFrame, y: pd.Series, model, encoding: str, crafted: tuple[str, ...] = (), *,
            transform: bool = True):
    """The refit on every training row (outliers still dropped): ``model`` inside the full pipeline;
    without ``transform``, a pipeline fit on the transformed target whose predictions stay in its
    space (an ensemble that combines members there applies the inverse itself)."""
    X_fit, y_fit = drop_outliers(comp, X, y)
    with threads.limit():
        if transform:
            return build_estimator(comp, model, encoding, crafted).fit(X_fit, y_fit)
        forward = TARGET_TRANSFORMS.get(comp.target_transform, (lambda v: v,))[0]
        pipe = Pipeline([*build_features(comp, encoding, crafted).steps, ("model", model)])
        return pipe.fit(X_fit, forward(y_fit.to_numpy()))
