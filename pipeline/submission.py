"""Submission: shape predictions like ``sample_submission.csv``, check them, write atomically.

The sample says the form: one column of values, labels or P(positive class); one probability
column per class, named by the class (``Class_1``) or by ``<target>_<class>`` (``Status_CL``);
or, for a ranking metric (MAP@k), the k most probable labels of each row, space-separated.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from features.tabular import category_label
from pipeline.console import say
from pipeline.data.files import write_csv_atomic
from pipeline.errors import UserError
from pipeline.metrics import Metric, top_k_labels
from pipeline.metrics import get as get_metric


def sample_targets(sample: pd.DataFrame, id_column: str) -> list[str]:
    return [c for c in sample.columns if c != id_column]


def wants_probabilities(sample: pd.DataFrame, id_column: str, metric: Metric) -> bool:
    """Predict probabilities (else labels or values): for a probability metric, a ranking one, or
    a sample with one column per class, whatever the metric."""
    return metric.needs_proba or metric.top_k is not None or len(sample_targets(sample, id_column)) > 1


def one_label_per_row(metric: Metric, sample: pd.DataFrame, targets: list[str]) -> Metric:
    """A ranking metric (MAP@k) on a sample whose one column holds numbers (0/1) cannot list k
    labels a row: one label is written, and scored as such (accuracy, MAP@1 for one true label)."""
    if metric.top_k is None or len(targets) != 1 or not pd.api.types.is_numeric_dtype(sample[targets[0]]):
        return metric
    say(f"metric {metric.name}: the sample's {targets[0]!r} holds one number a row, not lists of labels: "
        "one label is written, scored by accuracy (MAP@1)")
    return get_metric("accuracy")


def class_columns(columns: list[str], classes, target: str | None) -> list[int]:
    """For each sample column, the index of its class: the column is the class's name, or
    ``<target>_<class>``. Every column must name a class and every class have a column."""
    index = {category_label(c): i for i, c in enumerate(classes)}
    found = []
    for column in columns:
        name = str(column)
        if name not in index and target and name.startswith(f"{target}_"):
            name = name[len(target) + 1:]
        if name not in index:
            shown = ", ".join(list(index)[:10])
            raise UserError(f"sample submission column {column!r} names no class of the target (classes: {shown})")
        found.append(index[name])
    missing = sorted(set(index) - {category_label(classes[i]) for i in found})
    if missing:
        raise UserError(f"sample submission has no column for the class(es) {', '.join(missing[:5])}")
    return found


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell that starts so


def _skipped(char: str) -> bool:
    """Leading characters a spreadsheet skips before it reads a formula: spaces and controls."""
    return char.isspace() or unicodedata.category(char) == "Cc"


def escape_formulas(values: np.ndarray) -> np.ndarray:
    """Text labels that a spreadsheet would run as a formula (``=cmd|...``), with a leading ``'``,
    as OWASP advises for CSV files. Numbers are left alone (``-1.5`` is a value, not a formula),
    and so are ids, which must match the sample's byte for byte. Kaggle scores labels as text: a
    class whose name itself starts so is then scored as not predicted, which is said when it
    happens; we keep the file safe to open over that rare case."""
    if pd.api.types.is_numeric_dtype(values):
        return values

    def runs(value) -> bool:
        if not isinstance(value, str):
            return False
        start = next((i for i, char in enumerate(value) if not _skipped(char)), len(value))
        return (value.startswith(FORMULA_START) or value[start:].startswith(FORMULA_START)) and not _is_number(value)

    escaped = np.array(["'" + v if runs(v) else v for v in values], dtype=object)
    changed = sum(map(runs, values))
    if changed:
        say(f"submission: {changed} label{'s' if changed > 1 else ''} starting with = + - @ written with a "
            "leading ' (a spreadsheet would run them as formulas)")
    return escaped


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build(
    sample: pd.DataFrame, test_ids: pd.Series, predictions: np.ndarray, id_column: str, *, labels: bool,
    classes=None, target: str | None = None, top_k: int | None = None,
) -> pd.DataFrame:
    """One row per sample id, in the sample's order; predicted labels take the sample's dtype.

    ``predictions`` with one column per class (``classes`` order) become the sample's class
    columns, or with ``top_k`` each row's k most probable labels.
    """
    targets = sample_targets(sample, id_column)
    predictions = np.asarray(predictions)
    if top_k is not None and predictions.ndim == 1 and classes is not None and len(classes) == 2:
        predictions = np.column_stack([1.0 - predictions, predictions])  # P(classes[1]) of a binary model
    if predictions.ndim == 2:
        if classes is None or len(classes) != predictions.shape[1]:
            raise UserError("class probabilities need the classes they belong to")
        rows = pd.DataFrame(predictions, index=test_ids.to_numpy()).reindex(sample[id_column].to_numpy())
        if top_k is not None and len(targets) == 1:
            ranked = top_k_labels(rows.to_numpy(), [category_label(c) for c in classes], top_k)
            labels_listed = escape_formulas(np.array([" ".join(r) for r in ranked], dtype=object))
            return pd.DataFrame({id_column: sample[id_column].to_numpy(), targets[0]: labels_listed})
        found = class_columns(targets, classes, target)
        return pd.DataFrame({id_column: sample[id_column].to_numpy(),
                             **{column: rows[i].to_numpy() for column, i in zip(targets, found, strict=True)}})
    if len(targets) != 1:
        raise UserError(f"sample submission must have one target column besides {id_column!r}, has {targets}")
    target = targets[0]
    by_id = pd.Series(np.asarray(predictions), index=test_ids.to_numpy())
    values = by_id.reindex(sample[id_column].to_numpy()).to_numpy()
    if labels and pd.api.types.is_integer_dtype(sample[target]) and pd.api.types.is_numeric_dtype(values):
        if np.isfinite(values.astype(float)).all():
            values = values.astype(sample[target].dtype)
    return pd.DataFrame({id_column: sample[id_column].to_numpy(), target: escape_formulas(values)})


def check_submission(
    submission: pd.DataFrame, sample: pd.DataFrame, *, id_column: str, positive: bool
) -> None:
    """The submission must look exactly like the sample: header, ids once each, finite values."""
    if list(submission.columns) != list(sample.columns):
        raise UserError(f"submission header {list(submission.columns)} differs from the sample's {list(sample.columns)}")
    if len(submission) != len(sample):
        raise UserError(f"submission has {len(submission)} rows, the sample {len(sample)}")
    ids = submission[id_column]
    if ids.duplicated().any() or set(ids) != set(sample[id_column]):
        raise UserError("submission ids are not exactly the sample's ids, each once")
    values = submission.drop(columns=[id_column])
    numeric = values.select_dtypes("number")
    if values.isna().any().any() or not np.isfinite(numeric.to_numpy(dtype=float)).all():
        raise UserError("submission holds NaN or infinite predictions")
    if positive and (numeric.to_numpy() <= 0).any():
        raise UserError("submission holds non-positive predictions where prices must be positive")


def check_finite(predictions: np.ndarray, model: str, where: str) -> None:
    """Numeric predictions must be finite (labels may be text)."""
    values = np.asarray(predictions)
    if np.issubdtype(values.dtype, np.number) and not np.isfinite(values.astype(float)).all():
        raise UserError(f"model {model!r} produced NaN or infinite {where} predictions")


def finalize(
    sample: pd.DataFrame,
    test_ids: pd.Series,
    predictions: np.ndarray,
    *,
    id_column: str,
    positive: bool,
    labels: bool,
    path: Path,
    classes=None,
    target: str | None = None,
    top_k: int | None = None,
) -> pd.DataFrame:
    submission = build(sample, test_ids, predictions, id_column, labels=labels, classes=classes, target=target,
                       top_k=top_k)
    check_submission(submission, sample, id_column=id_column, positive=positive)
    write_csv_atomic(submission, path)
    return submission
