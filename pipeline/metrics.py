"""Evaluation metrics by name, and inference of a task and metric from the target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from pipeline.errors import UserError


@dataclass(frozen=True)
class Metric:
    name: str
    score: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    needs_proba: bool = False  # scored on P(positive class) rather than on labels


def _log_rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if np.any(y_pred <= 0) or np.any(y_true <= 0):
        raise UserError("log_rmse needs positive targets and predictions")
    return float(np.sqrt(np.mean((np.log(y_pred) - np.log(y_true)) ** 2)))


METRICS = {
    m.name: m
    for m in [
        Metric("log_rmse", _log_rmse, greater_is_better=False),
        Metric("rmse", lambda t, p: float(np.sqrt(skm.mean_squared_error(t, p))), False),
        Metric("mae", skm.mean_absolute_error, False),
        Metric("accuracy", skm.accuracy_score, True),
        Metric("roc_auc", skm.roc_auc_score, True, needs_proba=True),
        Metric("log_loss", skm.log_loss, False, needs_proba=True),
    ]
}


def get(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def infer_task(target: pd.Series) -> str:
    """Text or two values: classification; small sets of integers: multiclass; else regression."""
    values = target.dropna()
    n_unique = values.nunique()
    if n_unique == 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values)
    if not numeric:
        return "multiclass"
    integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    return "multiclass" if integral and n_unique <= 20 else "regression"


def infer_metric(task: str, submission_column: pd.Series | None) -> str:
    """Regression: RMSE. Binary: AUC when the sample submission holds probabilities, else accuracy."""
    if task == "regression":
        return "rmse"
    if task == "binary" and submission_column is not None:
        if pd.api.types.is_float_dtype(submission_column):
            return "roc_auc"
    return "accuracy"
