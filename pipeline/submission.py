"""Submission: shape predictions like ``sample_submission.csv``, check them, write atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.files import write_csv_atomic
from pipeline.errors import UserError


def build(
    sample: pd.DataFrame, test_ids: pd.Series, predictions: np.ndarray, id_column: str, *, labels: bool
) -> pd.DataFrame:
    """One row per sample id, in the sample's order; predicted labels take the sample's dtype."""
    targets = [c for c in sample.columns if c != id_column]
    if len(targets) != 1:
        raise UserError(f"sample submission must have one target column besides {id_column!r}, has {targets}")
    target = targets[0]
    by_id = pd.Series(np.asarray(predictions), index=test_ids.to_numpy())
    values = by_id.reindex(sample[id_column].to_numpy()).to_numpy()
    if labels and pd.api.types.is_integer_dtype(sample[target]) and pd.api.types.is_numeric_dtype(values):
        if np.isfinite(values.astype(float)).all():
            values = values.astype(sample[target].dtype)
    return pd.DataFrame({id_column: sample[id_column].to_numpy(), target: values})


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
) -> pd.DataFrame:
    submission = build(sample, test_ids, predictions, id_column, labels=labels)
    check_submission(submission, sample, id_column=id_column, positive=positive)
    write_csv_atomic(submission, path)
    return submission
