"""Out-of-fold and test predictions a competitor can blend with a notebook's own models.

Each tabular run logs two CSV files under its ``predictions/`` artifacts:

- ``oof.csv``: one row per training row and repeat that a fold held out: the row's id, ``repeat``
  and ``fold`` (which of that repeat's folds held it out), the ``actual`` target, and one column
  per member, named after it (``ridge``); for a classifier one column per class,
  ``<member>:<class>``, holding that member's out-of-fold probability. An ensemble's own blend is
  one more member, named after the model (``ensemble``).
- ``test.csv``: the same columns, for each test id, from the final model: each member it keeps
  (positive weight: its fold models averaged, or its refit) and its blend, which is what the
  submission holds.

Rows are in the training file's order within each repeat, so two runs with the same seed and
data write the same bytes. Floats are written in full (``repr``), so a blend in a notebook gives
what the run's own blend gives.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from models.ensemble import PrefitEnsemble
from models.targets import forward_inverse
from pipeline import tracking

FOLDER = "predictions"
CHUNK_ROWS = 50_000


def _columns(name: str, values: np.ndarray, classes) -> dict[str, np.ndarray]:
    """A member's predictions as columns: values or labels as one; probabilities one per class
    (a binary P(classes[1]) is written as both classes' columns)."""
    if classes is None:
        return {name: np.asarray(values)}
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = np.column_stack([1.0 - values, values])
    return {f"{name}:{label}": values[:, k] for k, label in enumerate(classes)}


def oof_frame(ids: pd.Series, actual: pd.Series, folds: list[np.ndarray], members: dict[str, list[np.ndarray]],
              classes=None) -> pd.DataFrame:
    """``folds``: each repeat's fold of every row (-1: not held out, left out of the file);
    ``members``: each member's out-of-fold predictions, one array per repeat; ``classes``: given
    when they are probabilities (columns in that order)."""
    parts = []
    for repeat, fold in enumerate(folds):
        held = np.asarray(fold) >= 0
        part = {ids.name: ids.to_numpy()[held], "repeat": repeat, "fold": np.asarray(fold)[held],
                "actual": actual.to_numpy()[held]}
        for name, each in members.items():
            part.update(_columns(name, np.asarray(each[repeat])[held], classes))
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def test_frame(ids: pd.Series, members: dict[str, np.ndarray], classes=None) -> pd.DataFrame:
    frame = {ids.name: ids.to_numpy()}
    for name, values in members.items():
        frame.update(_columns(name, values, classes))
    return pd.DataFrame(frame)


def _log(frame: pd.DataFrame, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False, float_format="%.17g")
        tracking.log_artifact_under(path, FOLDER)


def log_oof(ids: pd.Series, actual: pd.Series, folds: list[np.ndarray], members: dict[str, list[np.ndarray]],
            classes=None) -> None:
    """``predictions/oof.csv`` on the active run (see :func:`oof_frame`)."""
    _log(oof_frame(ids, actual, folds, members, classes), "oof.csv")


def member_predictions(fitted: PrefitEnsemble, X: pd.DataFrame, name: str,
                       target_transform: str | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each kept member's test predictions (probabilities in ``fitted.classes_`` order, or values
    on the target's scale) and, as ``name`` where there are several, their blend; and the blend
    itself, as ``fitted`` predicts it (``predict_proba`` or ``predict``), a chunk of rows at a
    time: the test set goes through every member once, for the file and the submission alike."""
    names = fitted.used_names()
    chunks: dict[str, list[np.ndarray]] = {member: [] for member in names}
    blended = []
    inverse = forward_inverse(None if fitted._is_classifier() else target_transform)[1]
    for start in range(0, len(X), CHUNK_ROWS):
        rows = X.iloc[start:start + CHUNK_ROWS]
        outputs = fitted.member_outputs(rows)
        for member, output in zip(names, outputs, strict=True):
            chunks[member].append(inverse(output))
        blended.append(fitted.combine(outputs, rows))
    combined = np.concatenate(blended)
    found = {member: np.concatenate(parts) for member, parts in chunks.items()}
    if len(names) > 1:
        found[name] = combined
    return found, combined


def log_test(ids: pd.Series, members: dict[str, np.ndarray], classes=None) -> None:
    """``predictions/test.csv`` on the active run (see :func:`test_frame`)."""
    _log(test_frame(ids, members, classes), "test.csv")
