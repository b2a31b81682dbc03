"""k-fold training: one ``Pipeline(features, model)`` per fold, out-of-fold predictions, metrics.

Every fitted transform sees only its training fold; the refit on all rows comes afterwards.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from features.engineering import make_feature_steps
from features.tabular import TabularPreprocessor
from models import registry
from pipeline.config import Competition
from pipeline.errors import UserError
from pipeline.metrics import Metric

DEFAULT_MODELS = {"regression": "ridge", "binary": "hist_gbm_classifier", "multiclass": "hist_gbm_classifier"}

FoldCallback = Callable[[int, float], None]
EpochCallback = Callable[[int, dict[str, float]], None]


def model_choice(comp: Competition, task: str, model: str | None, params: dict) -> tuple[str, dict]:
    """The model to run and its parameters: the command line's, else the config's, else the task's default."""
    name = model or comp.model.name or DEFAULT_MODELS[task]
    base = comp.model.params if name == comp.model.name else {}
    try:
        entry = registry.get(name, "tabular")
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if task not in entry.tasks:
        raise UserError(f"model {name!r} does not do {task} (it does {', '.join(sorted(entry.tasks))})")
    return name, {**base, **params}


def build_estimator(comp: Competition, model: str, params: dict):
    """Feature steps from the config, the preprocessor, the model; log target wrapped around all."""
    try:
        estimator = registry.create(model, "tabular", **params)
    except TypeError as exc:
        raise UserError(f"model {model!r}: {exc}") from None
    steps = make_feature_steps(comp.features) + [
        ("preprocess", TabularPreprocessor(categorical=comp.categorical, numeric=comp.numeric, drop=comp.drop)),
        ("model", estimator),
    ]
    pipe = Pipeline(steps)
    if comp.target_transform == "log":
        return TransformedTargetRegressor(regressor=pipe, func=np.log, inverse_func=np.exp, check_inverse=False)
    return pipe


def final_model(estimator):
    pipe = estimator.regressor_ if isinstance(estimator, TransformedTargetRegressor) else estimator
    return pipe.named_steps["model"]


def _fit(estimator, X: pd.DataFrame, y: pd.Series, on_epoch: Callable[[dict], None] | None):
    pipe = estimator.regressor if isinstance(estimator, TransformedTargetRegressor) else estimator
    accepts_epoch_hook = "on_epoch" in inspect.signature(pipe.named_steps["model"].fit).parameters
    fit_params = {"model__on_epoch": on_epoch} if on_epoch and accepts_epoch_hook else {}
    return estimator.fit(X, y, **fit_params)


def predict(estimator, X: pd.DataFrame, metric: Metric) -> np.ndarray:
    if metric.needs_proba:
        proba = estimator.predict_proba(X)
        return proba[:, 1] if proba.shape[1] == 2 else proba
    return np.asarray(estimator.predict(X))


def drop_outliers(comp: Competition, X: pd.DataFrame, y: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Rows matching the config's ``outliers`` query leave the training rows; scoring keeps them."""
    if not comp.outliers:
        return X, y
    try:
        flagged = X.assign(**{comp.target: y.to_numpy()}).eval(comp.outliers)
    except Exception as exc:  # pandas raises many types for a bad expression
        raise UserError(f"outliers query {comp.outliers!r} failed: {exc}") from None
    keep = ~np.asarray(flagged, dtype=bool)
    return X[keep], y[keep]


@dataclass
class CVResult:
    oof: np.ndarray
    fold_scores: list[float]
    score: float
    histories: list[list[dict]] = field(default_factory=list)


def splitter(comp: Competition, task: str):
    if task == "regression":
        return KFold(comp.cv.folds, shuffle=True, random_state=comp.cv.seed)
    return StratifiedKFold(comp.cv.folds, shuffle=True, random_state=comp.cv.seed)


def cross_validate(
    comp: Competition,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    task: str,
    metric: Metric,
    model: str,
    params: dict,
    on_fold: FoldCallback | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool | None = None,
) -> CVResult:
    """Shuffled, seeded k-fold. ``on_fold``/``on_epoch`` see each score as it comes (and may raise)."""
    template = build_estimator(comp, model, params)
    oof: np.ndarray | None = None
    fold_scores, histories = [], []
    folds = list(splitter(comp, task).split(X, y))
    for k, (train_idx, valid_idx) in enumerate(tqdm(folds, desc=f"{model} folds", disable=not progress, leave=False)):
        X_fit, y_fit = drop_outliers(comp, X.iloc[train_idx], y.iloc[train_idx])
        epoch_hook = (lambda log, k=k: on_epoch(k, log)) if on_epoch else None
        estimator = _fit(clone(template), X_fit, y_fit, epoch_hook)
        predictions = predict(estimator, X.iloc[valid_idx], metric)
        if oof is None:
            oof = np.zeros((len(X), *predictions.shape[1:]), dtype=predictions.dtype)
        oof[valid_idx] = predictions
        fold_scores.append(metric.score(y.iloc[valid_idx].to_numpy(), predictions))
        histories.append(getattr(final_model(estimator), "history_", []))
        if on_fold:
            on_fold(k, fold_scores[-1])
    assert oof is not None
    if not np.isfinite(np.asarray(oof, dtype=float)).all():
        raise UserError(f"model {model!r} produced NaN or infinite out-of-fold predictions")
    return CVResult(oof=oof, fold_scores=fold_scores, score=metric.score(y.to_numpy(), oof), histories=histories)


def fit_all(comp: Competition, X: pd.DataFrame, y: pd.Series, *, model: str, params: dict):
    """The refit on every training row (outliers still dropped), for the test predictions."""
    X_fit, y_fit = drop_outliers(comp, X, y)
    return _fit(build_estimator(comp, model, params), X_fit, y_fit, None)
