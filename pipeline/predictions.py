"""Out-of-fold and test predictions a competitor can blend with a notebook's own models.

Each tabular run logs two CSV files under its ``predictions/`` artifacts:

- ``oof.csv``: one row per training row and repeat that a fold held out: the row's id, ``repeat``
  and ``fold`` (which of that repeat's folds held it out), the ``actual`` target, and one column
  per member, named after it (``ridge``); for a classifier one column per class,
  ``<member>:<class>``, holding that member's out-of-fold probability. An ensemble's own blend is
  one more member, named after the model (``ensemble``).
- ``test.csv``: the same columns, for each test id, from the models refit on every row: the
  members the final model keeps (an ensemble refits only those of positive weight) and its blend.

Rows are in the training file's order within each repeat, so two runs with the same seed and
data write the same bytes. Floats are written in full (``repr``), so a blend in a notebook gives
what the run's own blend gives.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor

from models.ensemble import WeightedEnsemble
from pipeline import tracking
from pipeline.metrics import Metric

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


def _predict(estimator, rows, classes) -> np.ndarray:
    """Values or labels; given ``classes``, probabilities in their order (0 for a class unseen)."""
    if classes is None:
        return np.asarray(estimator.predict(rows))
    found = estimator.predict_proba(rows)
    aligned = np.zeros((len(found), len(classes)))
    aligned[:, [list(classes).index(c) for c in estimator.classes_]] = found
    return aligned


def member_predictions(fitted, X: pd.DataFrame, metric: Metric, name: str, *, proba: bool) -> dict[str, np.ndarray]:
    """Each member's test predictions from a refit ``Pipeline(features..., model)`` (in a target
    transform or not), and an ensemble's blend of them as ``name``; the features are computed
    once per chunk of rows and shared by the members."""
    inverse = None
    if isinstance(fitted, TransformedTargetRegressor):
        fitted, inverse = fitted.regressor_, fitted.inverse_func
    features, model = fitted[:-1], fitted[-1]
    members = model.estimators_ if isinstance(model, WeightedEnsemble) else [(name, model)]
    chunks: dict[str, list[np.ndarray]] = {member: [] for member, _ in members}
    for start in range(0, len(X), CHUNK_ROWS):
        rows = features.transform(X.iloc[start:start + CHUNK_ROWS])
        for member, estimator in members:
            chunks[member].append(_predict(estimator, rows, metric.classes if proba else None))
    raw = {member: np.concatenate(parts) for member, parts in chunks.items()}
    found = {member: inverse(values) if inverse else values for member, values in raw.items()}
    if isinstance(model, WeightedEnsemble):
        blended = sum(w * raw[member] for (member, _), w in zip(members, model.weights_, strict=True))
        if proba:
            found[name] = blended
        elif metric.classes is None:
            found[name] = inverse(blended + model.intercept) if inverse else blended + model.intercept
    return found


def log_test(ids: pd.Series, members: dict[str, np.ndarray], classes=None) -> None:
    """``predictions/test.csv`` on the active run (see :func:`test_frame`)."""
    _log(test_frame(ids, members, classes), "test.csv")
