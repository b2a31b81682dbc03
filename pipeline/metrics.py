"""Evaluation metrics by name, and inference of a task and metric from the target."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from pipeline.errors import UserError


@dataclass(frozen=True)
class Metric:
    """A metric by name. ``fn(y_true, y_pred, classes)``; ``classes`` (bound by :meth:`with_classes`)
    are the training target's sorted classes, the column order of ``predict_proba``."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray, Sequence | None], float]
    greater_is_better: bool
    needs_proba: bool = False  # scored on probabilities: P(classes[1]) for binary, one column per class else
    top_k: int | None = None  # ranked: a submission lists the k most probable labels, space-separated
    classes: tuple | None = None

    def score(self, y_true, y_pred) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(y_pred), self.classes))

    def with_classes(self, classes: Sequence) -> Metric:
        return dataclasses.replace(self, classes=tuple(classes))


def _log_rmse(y_true: np.ndarray, y_pred: np.ndarray, classes=None) -> float:
    if np.any(y_pred <= 0) or np.any(y_true <= 0):
        raise UserError("log_rmse needs positive targets and predictions")
    return float(np.sqrt(np.mean((np.log(y_pred) - np.log(y_true)) ** 2)))


def _rmsle(y_true, y_pred, classes=None) -> float:
    if np.any(y_true < 0):
        raise UserError("rmsle needs non-negative targets")
    # A negative prediction scores as 0: Kaggle refuses negative values for this metric.
    return skm.root_mean_squared_log_error(y_true, np.clip(y_pred, 0, None))


def _labels(y_true, y_pred, classes) -> list:
    return list(classes) if classes is not None else sorted(set(y_true.tolist()) | set(y_pred.tolist()))


def _f1(y_true, y_pred, classes=None) -> float:
    labels = _labels(y_true, y_pred, classes)
    if len(labels) > 2:
        raise UserError("f1 is for a binary target; use macro_f1 for several classes")
    return skm.f1_score(y_true, y_pred, pos_label=labels[-1])  # the positive class: the greater label


def _macro_f1(y_true, y_pred, classes=None) -> float:
    return skm.f1_score(y_true, y_pred, average="macro", labels=_labels(y_true, y_pred, classes))


def _roc_auc(y_true, y_pred, classes=None) -> float:
    if y_pred.ndim == 2:  # several classes: one against the rest, averaged
        return skm.roc_auc_score(y_true, y_pred, multi_class="ovr", labels=classes)
    return skm.roc_auc_score(y_true, y_pred)


def _log_loss(y_true, y_pred, classes=None) -> float:
    if y_pred.ndim == 2:  # each row rescaled to sum to 1, as Kaggle scores it: float32 models drift by 1e-7
        sums = y_pred.sum(axis=1, keepdims=True)
        y_pred = y_pred / np.where(sums > 0, sums, 1.0)
    return skm.log_loss(y_true, y_pred, labels=None if classes is None else list(classes))


def top_k_labels(proba: np.ndarray, classes: Sequence, k: int) -> np.ndarray:
    """The ``k`` most probable classes of each row, best first (ties: the earlier class)."""
    order = np.argsort(-np.asarray(proba), axis=1, kind="stable")[:, :k]
    return np.asarray(classes, dtype=object)[order]


def _map_at_k(y_true, y_pred, classes=None, *, k: int) -> float:
    """Mean average precision at k with one true label per row: 1/rank of the true label among
    the k predicted, 0 when it is not among them. ``y_pred``: probabilities (one column per class),
    or each row's labels as "a b c" text."""
    if y_pred.ndim == 1 and classes is not None and len(classes) == 2 and np.issubdtype(y_pred.dtype, np.floating):
        y_pred = np.column_stack([1.0 - y_pred, y_pred])  # a binary model's P(classes[1])
    if y_pred.ndim == 2:
        if classes is None:
            raise UserError(f"map@{k} on probabilities needs the classes")
        ranked = top_k_labels(y_pred, classes, k)
    else:
        ranked = [str(row).split()[:k] for row in y_pred]
    total = 0.0
    for truth, labels in zip(y_true, ranked, strict=True):
        hits = [i for i, label in enumerate(labels) if str(label) == str(truth)]
        total += 1.0 / (hits[0] + 1) if hits else 0.0
    return total / len(y_true)


def _map_metric(k: int) -> Metric:
    return Metric(f"map_at_{k}", partial(_map_at_k, k=k), True, needs_proba=True, top_k=k)


def _without_classes(y_true, y_pred, classes=None, *, fn):
    return fn(y_true, y_pred)


def _plain(fn):
    """``fn(y_true, y_pred)`` as a metric function; a partial, not a lambda: a metric goes to a
    fold's worker process (``pipeline.tasks.executor``) pickled."""
    return partial(_without_classes, fn=fn)


METRICS = {
    m.name: m
    for m in [
        Metric("log_rmse", _log_rmse, greater_is_better=False),
        Metric("rmse", _plain(skm.root_mean_squared_error), False),
        Metric("rmsle", _rmsle, False),
        Metric("mae", _plain(skm.mean_absolute_error), False),
        Metric("r2", _plain(skm.r2_score), True),
        Metric("accuracy", _plain(skm.accuracy_score), True),
        Metric("f1", _f1, True),
        Metric("macro_f1", _macro_f1, True),
        Metric("roc_auc", _roc_auc, True, needs_proba=True),
        Metric("log_loss", _log_loss, False, needs_proba=True),
        _map_metric(3),
    ]
}
ALIASES = {"f1_macro": "macro_f1", "auc": "roc_auc", "logloss": "log_loss", "mlogloss": "log_loss",
           "rmsle": "rmsle", "msle": "rmsle"}
_MAP = re.compile(r"map(?:@|_at_|_?)(\d+)")


def get(name: str) -> Metric:
    """A metric by name, case-insensitive, with a few aliases; ``map@K`` (or ``map_at_K``) for any K."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in METRICS:
        return METRICS[key]
    ranked = _MAP.fullmatch(key)
    if ranked and int(ranked.group(1)) > 0:
        return _map_metric(int(ranked.group(1)))
    raise UserError(f"unknown metric {name!r} (known: {', '.join(METRICS)}, map@K, f1_macro)")


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


def infer_metric(task: str, submission_column: pd.Series | pd.DataFrame | None, labels=None) -> str:
    """Regression: RMSE. Binary: AUC when the sample submission holds probabilities, else accuracy.
    Classification with one sample column per class: log loss. Lists of the training ``labels``,
    several to a row ("a b c"): MAP@k, k the most listed; a label with a space in it ("New York")
    is one label, never a list. Else accuracy. ``submission_column``: the sample's column(s)
    besides the id."""
    if task == "regression":
        return "rmse"
    if isinstance(submission_column, pd.DataFrame):
        if submission_column.shape[1] > 1:
            return "log_loss"
        submission_column = submission_column.iloc[:, 0]
    if submission_column is None:
        return "accuracy"
    if task == "binary" and pd.api.types.is_float_dtype(submission_column):
        return "roc_auc"
    if labels is not None and not pd.api.types.is_numeric_dtype(submission_column):
        known = {str(label) for label in pd.Series(labels).dropna()}
        words = submission_column.dropna().astype(str).str.split()
        listed = words.str.len()
        if len(listed) and listed.max() > 1 and all(set(row) <= known for row in words):
            return f"map@{int(listed.max())}"
    return "accuracy"
