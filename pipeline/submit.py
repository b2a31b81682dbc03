"""Submission: shape predictions like ``sample_submission.csv``, check them, write atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.validate import check_submission


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


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, index=False)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a submission is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    write_atomic(submission, path)
    return submission
