"""k-fold training: per fold, the feature steps are fit on the training part only, then every
model is fit on their output; out-of-fold predictions and metrics come back per model.

Fitting the features once per fold and sharing them between models gives the same result as one
``Pipeline(features, model)`` per model and fold, at a fraction of the cost for an ensemble. The
refit on all rows builds that one ``Pipeline`` (ensemble included), which is what gets saved.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from features.engineering import make_feature_steps
from features.native import MAX_LEVELS, NativePreprocessor
from features.roles import ColumnRoles, infer_roles
from features.rules import RowRule
from features.tabular import TabularPreprocessor
from models import registry, threads
from models.boosting import EVAL_METRICS
from models.targets import TARGET_TRANSFORMS
from pipeline.config import Competition
from pipeline.errors import UserError
from pipeline.metrics import Metric
from pipeline.submission import check_finite
from pipeline.tasks.base import CVResult, EpochCallback, FoldCallback


def create_model(name: str, params: dict, metric: Metric | None = None):
    """The registered model ``name`` with ``params``; given the competition's ``metric``, a model
    that can stop early on it (``eval_metric``, :data:`models.boosting.EVAL_METRICS`) does, unless
    ``params`` say otherwise."""
    try:
        model = registry.create(name, "tabular", **params)
    except TypeError as exc:
        raise UserError(f"model {name!r}: {exc}") from None
    if (metric is not None and metric.name in EVAL_METRICS and "eval_metric" not in params
            and "eval_metric" in model.get_params()):
        model.set_params(eval_metric=metric.name)
    return model


def role_options(comp: Competition) -> dict:
    """The column roles the config gives, and whether to guess those of ordinary columns."""
    return {"categorical": comp.categorical, "numeric": comp.numeric, "drop": comp.drop, "text": comp.text,
            "date": comp.date, "high_cardinality": comp.high_cardinality, "infer": comp.infer_roles}


ENCODINGS = ("onehot", "native", "native_levels")


def feature_encoding(model) -> str:
    """The features ``model`` takes: ``"native"`` (numbers with their gaps, pandas categories:
    ``NativePreprocessor``) or ``"native_levels"`` (categories of more levels too) where it says so
    (``model.feature_encoding``); else ``"onehot"`` (``TabularPreprocessor``)."""
    return getattr(model, "feature_encoding", "onehot")


def shared_encoding(models) -> str:
    """The one encoding for features shared by ``models``: theirs where they all take the same."""
    encodings = {feature_encoding(model) for model in models}
    return encodings.pop() if len(encodings) == 1 else "onehot"


def native_levels_differ(comp: Competition, X: pd.DataFrame) -> bool:
    """Whether ``native_levels`` features of ``X`` differ from ``native`` ones: whether it has a
    category of more levels than ``max_onehot`` and fewer than ``MAX_LEVELS``."""
    options = {**role_options(comp), "max_onehot_width": None}
    return infer_roles(X, **options) != infer_roles(X, **options, max_onehot=MAX_LEVELS - 1)


def build_features(comp: Competition, encoding: str = "onehot") -> Pipeline:
    """The config's feature-engineering steps, then the column roles, then the preprocessor of
    ``encoding`` (:data:`ENCODINGS`). Native categories have no one-hot width to keep within:
    only a column of more than ``max_onehot`` levels goes to frequency and target encoding, and
    with ``native_levels`` only one of more than ``MAX_LEVELS - 1``, the most a native category
    keeps (hotel_price's agent, company and country, 95-160 levels: LightGBM's 5-fold MAE 8.258 ->
    8.174 and 8.135 -> 7.981 over two shuffles; flights' 104-level ``dest``: RMSE 15.72 -> 15.85).
    Either does better on some data: the portfolio has both, and the selection decides."""
    if encoding not in ENCODINGS:
        raise ValueError(f"feature encoding {encoding!r}: one of {', '.join(ENCODINGS)}")
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
    return Pipeline([*steps, ("roles", roles), ("preprocess", preprocess)])


def build_estimator(comp: Competition, model, encoding: str | None = None):
    """``Pipeline(features..., model)``, inside the target transform when the config has one;
    the features of ``encoding``, by default those the model takes (:func:`feature_encoding`)."""
    pipe = Pipeline([*build_features(comp, encoding or feature_encoding(model)).steps, ("model", model)])
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


def as_labels(predictions: np.ndarray, metric: Metric) -> np.ndarray:
    """Probabilities (P(classes[1]), or one column per class) as the most probable class."""
    classes = np.asarray(metric.classes)
    if predictions.ndim == 1:
        return classes[(predictions > 0.5).astype(int)]
    return classes[np.argmax(predictions, axis=1)]


def score(metric: Metric, y_true: np.ndarray, predictions: np.ndarray, proba: bool = False) -> float:
    """``metric`` on predictions; ``proba``: they are probabilities, made labels where it takes labels."""
    if proba and not metric.needs_proba:
        predictions = as_labels(predictions, metric)
    return metric.score(y_true, predictions)


def drop_outliers(comp: Competition, X: pd.DataFrame, y: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Rows matching the config's ``outliers`` rule leave the training rows; scoring keeps them."""
    keep = ~outlier_mask(comp, X, y)
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


def cross_validate_many(
    comp: Competition,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    task: str,
    metric: Metric,
    models: dict[str, dict],
    on_fold: FoldCallback | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool | None = None,
    scored_rows: np.ndarray | None = None,
    proba: bool = False,
) -> dict[str, CVResult]:
    """Shuffled, seeded k-fold (``comp.cv.repeats`` times) for several models sharing each fold's
    fitted features.

    ``on_fold(k, score)`` and ``on_epoch(k, log, epochs)`` (for a single model) see each score as it
    comes, and may raise to stop early, as an Optuna pruner does. ``progress``: tqdm bars for
    folds and epochs; ``None`` shows them only in a terminal, so CI logs stay quiet.
    ``scored_rows`` (a boolean mask) limits the rows the scores are computed on; every row is
    still predicted out of fold. ``proba``: the out-of-fold predictions of a classifier are
    probabilities (P(classes[1]) for two classes, else a column per class) whatever the metric,
    as an ensemble's weights need; a metric on labels scores their most probable class.

    With several repeats, each model's result holds each repeat's own (``repeats``); its ``oof``
    is their mean (still out of fold: no row's prediction comes from a model that saw it),
    ``folds`` the first repeat's, and ``score`` the mean of the repeats' scores.
    """
    scored = np.ones(len(X), dtype=bool) if scored_rows is None else np.asarray(scored_rows, dtype=bool)
    hidden = not sys.stderr.isatty() if progress is None else not progress
    forward, inverse = TARGET_TRANSFORMS.get(comp.target_transform, (None, None))
    splits = [(r, k, train_idx, valid_idx) for r in range(comp.cv.repeats)
              for k, (train_idx, valid_idx) in enumerate(splitter(comp, task, r).split(X, y))]
    fold_of_row = np.full((comp.cv.repeats, len(X)), -1, dtype=int)
    oof: dict[str, np.ndarray] = {}
    scores: dict[str, list[list[float]]] = {name: [[] for _ in range(comp.cv.repeats)] for name in models}
    histories: dict[str, list] = {name: [] for name in models}
    y_true = y.to_numpy()
    # One feature matrix a fold for every model: native where all of them take it (feature_encoding).
    encoding = shared_encoding(create_model(name, params, metric) for name, params in models.items())
    for r, k, train_idx, valid_idx in tqdm(splits, desc="folds", disable=hidden, leave=False):
        fold_of_row[r, valid_idx] = k
        X_fit, y_fit = drop_outliers(comp, X.iloc[train_idx], y.iloc[train_idx])
        target = forward(y_fit.to_numpy()) if forward else y_fit.to_numpy()
        features = build_features(comp, encoding)
        train_matrix = features.fit_transform(X_fit, target)  # the target: for target encoding
        valid_matrix = features.transform(X.iloc[valid_idx])
        for name, params in models.items():
            model = create_model(name, params, metric)
            epochs = getattr(model, "epochs", 0)
            with tqdm(desc=f"{name} fold {k} epochs", unit="epoch", disable=hidden, leave=False) as bar:

                def hook(log, k=k, bar=bar, epochs=epochs):
                    bar.update(1)
                    bar.set_postfix(train_loss=f"{log['train_loss']:.4f}")
                    if on_epoch:
                        on_epoch(k, log, epochs)

                fit_model(model, train_matrix, target, hook)
            predictions = predict(model, valid_matrix, metric, proba=proba or None)
            if inverse:
                predictions = inverse(predictions)
            if name not in oof:
                oof[name] = np.zeros((comp.cv.repeats, len(X), *predictions.shape[1:]), dtype=predictions.dtype)
            oof[name][r, valid_idx] = predictions
            check_finite(predictions, name, "out-of-fold")
            counted = scored[valid_idx]
            scores[name][r].append(score(metric, y_true[valid_idx][counted], predictions[counted], proba))
            histories[name].append(getattr(model, "history_", []))
            if on_fold:
                on_fold(k, scores[name][r][-1])
    repeats = int((fold_of_row >= 0).any(axis=1).sum())  # those that ran, the first at least in part

    def result(name: str, r: int) -> CVResult:
        held = (fold_of_row[r] >= 0) & scored
        return CVResult(oof[name][r], scores[name][r], score(metric, y_true[held], oof[name][r][held], proba),
                        fold_of_row[r], histories[name])

    results = {}
    for name in models:
        if repeats == 1:
            results[name] = result(name, 0)
            continue
        each = [result(name, r) for r in range(repeats)]
        mean_oof = oof[name][:repeats].mean(axis=0)
        results[name] = CVResult(mean_oof, [s for one in each for s in one.fold_scores],
                                 float(np.mean([one.score for one in each])), fold_of_row[0], histories[name],
                                 repeats=each)
    return results


def fit_all(comp: Competition, X: pd.DataFrame, y: pd.Series, model, *, transform: bool = True):
    """The refit on every training row (outliers still dropped): ``model`` inside the full pipeline;
    without ``transform``, a pipeline fit on the transformed target whose predictions stay in its
    space (an ensemble that combines members there applies the inverse itself)."""
    X_fit, y_fit = drop_outliers(comp, X, y)
    with threads.limit():
        if transform:
            return build_estimator(comp, model).fit(X_fit, y_fit)
        forward = TARGET_TRANSFORMS.get(comp.target_transform, (lambda v: v,))[0]
        pipe = Pipeline([*build_features(comp, feature_encoding(model)).steps, ("model", model)])
        return pipe.fit(X_fit, forward(y_fit.to_numpy()))
