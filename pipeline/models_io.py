"""Each run's refit model in MLflow's format, and its place in the model registry.

Tabular
    The refit ``Pipeline(features, model)`` (an ensemble's too) behind a
    ``features.columns.SelectColumns`` step, logged with ``mlflow.sklearn``: it takes rows as they
    come in test.csv, id column included, and the preprocessing travels inside it. Its pyfunc
    returns ``predict``, or ``predict_proba`` where the metric scores probabilities.
Image
    A pyfunc whose files are the run's ``model.pt`` (a ``state_dict``, read with
    ``torch.load(weights_only=True)``) and ``model.json`` (the architecture and its params):
    ``_load_pyfunc`` rebuilds the network from them; nothing is unpickled. It takes pixel rows as
    in test.csv (``pixel0..pixel783``) and returns labels.

Both carry a signature, an input example (the training file's first rows, target left out)
and metadata: the competition, its id and target columns and how the output becomes a
submission column (``pipeline.predict`` reads it). In the signature a text column is a
``string`` and a numeric one ``any`` (see ``input_spec``).

Registry: ``register`` makes the run's model a new version of the model named after the
competition (``registered_name``); ``@champion`` moves to it only when its CV score beats the
champion's on the same metric, split, folds, repeats and rows (``Coverage``), or covers more.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.pipeline import Pipeline

from features.columns import SelectColumns
from models.image import ImageClassifier
from pipeline import tracking
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.metrics import Metric

EXAMPLE_ROWS = 5
CHAMPION = "champion"
NUMERIC_TYPE = "any"  # in a signature: see input_spec
PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "torch", "cloudpickle", "mlflow",
            "lightgbm", "catboost", "xgboost", "xgboost-cpu")  # either xgboost wheel: the one installed
OOF_FILE = "oof_predictions.csv"  # in a tabular model's extra_files: what ``blend`` combines

# Each cloudpickled model would warn that skops is safer (see ``tracking.log_model`` for why not);
# registering runs:/<id>/model, that MLflow 3 resolves it to the logged model. Neither helps.
logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
logging.getLogger("mlflow.tracking._model_registry.fluent").setLevel(logging.ERROR)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model download


def requirements() -> list[str]:
    """The installed versions of what a logged model needs (MLflow would otherwise infer them,
    seconds per run). The models also import this package (kaggle-pipeline), installed apart."""
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name}=={package_metadata.version(name)}")
        except package_metadata.PackageNotFoundError:
            pass
    return found


def input_spec(frame: pd.DataFrame) -> list[dict]:
    """The signature's columns (MLflow column specs): text as ``string``, numbers as ``any``: a test
    file holds gaps (read as floats) where the training file held whole numbers, and the reverse
    (Kaggle's house prices have both), which no numeric type of MLflow's would let through."""
    numeric = set(frame.select_dtypes(["number", "bool"]).columns)
    return [{"name": str(c), "type": NUMERIC_TYPE if c in numeric else "string", "required": True} for c in frame.columns]


def _metadata(comp: Competition, metric: Metric, output: str, *, labels: bool, positive: bool) -> dict:
    return {"competition": comp.name, "id": comp.id, "target": comp.target, "metric": metric.name,
            "output": output, "labels": labels, "positive": positive, "target_transform": comp.target_transform,
            "test_file": comp.test_file,
            "sample_submission_file": comp.sample_submission_file}


def log_tabular(comp: Competition, train: pd.DataFrame, plan: Any, estimator, result: Any,
                fit_rows: np.ndarray) -> None:
    """The refit ``estimator`` behind ``SelectColumns``: raw rows of test.csv in, submission values
    out. ``train`` is train.csv as read; ``result`` the CV result, whose out-of-fold predictions
    (with each row's fold, and whether it may fit blend weights: ``fit_rows``) go in the model."""
    raw = train.drop(columns=[comp.target])
    model = Pipeline([("columns", SelectColumns([c for c in raw.columns if c != comp.id])), ("model", estimator)])
    example = raw.head(EXAMPLE_ROWS)
    proba = plan.metric.needs_proba
    output = model.predict_proba(example) if proba else np.asarray(model.predict(example))
    labels = plan.task != "regression" and not proba
    metadata = _metadata(comp, plan.metric, "proba" if proba else "labels" if labels else "values",
                         labels=labels, positive=comp.target_transform == "log")
    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if result.oof.ndim == 1:
            extra.append(Path(tmp) / OOF_FILE)
            pd.DataFrame({comp.id: train[comp.id].to_numpy(), "actual": train[comp.target].to_numpy(),
                          "oof": result.oof, "fold": result.folds, "fit": fit_rows}).to_csv(extra[0], index=False)
        tracking.log_model(model, input_spec(raw), output, input_example=example, metadata=metadata,
                           pyfunc_predict_fn="predict_proba" if proba else "predict",
                           pip_requirements=requirements(), extra_files=[str(p) for p in extra] or None)


def log_image(comp: Competition, clf: ImageClassifier, arch: str, values: dict, X_train: np.ndarray,
              metric: Metric, *, first_pixel: int = 0) -> None:
    """The refit ``clf`` as a pyfunc over pixel rows ``pixel<first_pixel>...`` (rank 0 only)."""
    if not tracking.is_main_process():
        return
    shown = X_train[:EXAMPLE_ROWS]
    if shown.ndim == 4:  # colour (N, 3, S, S): pixel rows in row, column, channel order, as CSVs hold them
        shown = shown.transpose(0, 2, 3, 1)
    pixels = shown.reshape(len(shown), -1)
    example = pd.DataFrame(pixels.astype(np.int64),
                           columns=[f"pixel{i}" for i in range(first_pixel, first_pixel + pixels.shape[1])])
    in_channels = 1 if X_train.ndim == 3 else X_train.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "image-model"
        folder.mkdir()
        state = clf.state_dict()
        state["model"] = {k: v.detach().cpu() for k, v in state["model"].items()}  # loads on any machine
        torch.save(state, folder / "model.pt")
        (folder / "model.json").write_text(json.dumps(
            {"arch": arch, "params": values, "classes": clf.classes_.tolist(), "in_channels": in_channels,
             "columns": list(example.columns)}, default=str))
        tracking.log_model(folder, input_spec(example), clf.predict(pixels), loader_module=__name__, input_example=example,
                           pip_requirements=requirements(),
                           metadata=_metadata(comp, metric, "labels", labels=True, positive=False))


class ImagePredictor:
    """Pixel rows -> labels: what MLflow's pyfunc calls for an image model."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        described = json.loads((folder / "model.json").read_text())
        self.columns = described["columns"]
        clf = ImageClassifier(arch=described["arch"], **described["params"])
        state = torch.load(folder / "model.pt", weights_only=True, map_location="cpu")
        self.clf = clf.load_state_dict(state, in_channels=described["in_channels"])

    def predict(self, model_input, params=None) -> np.ndarray:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing pixel columns {', '.join(missing[:3])}")
        pixels = frame[self.columns].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(pixels) | (pixels != np.round(pixels)) | (pixels < 0) | (pixels > 255)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"row {row}, column {self.columns[col]}: {pixels[row, col]} is not a pixel value 0..255")
        return self.clf.predict(pixels.astype(np.uint8))


def _load_pyfunc(data_path: str) -> ImagePredictor:
    """MLflow's entry point for a pyfunc logged with ``loader_module`` (this module)."""
    return ImagePredictor(data_path)


# --- the registry ---------------------------------------------------------------------------------


def registered_name(competition: str) -> str:
    """The registered model's name for a competition: its name, with what MLflow refuses in a model
    name or what breaks a ``models:/<name>@champion`` URI (``/``, ``:``, ``@``, spaces) as ``-``.
    ``submit`` registers under it; ``predict`` and ``serve`` look it up by the same function."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", competition).strip("-.")
    if not name:
        raise UserError(f"competition name {competition!r} gives no usable model name: name it with letters or digits")
    return name


def split_of(comp: Competition) -> str:
    """The split a CV score was computed on: scores on other splits are not comparable."""
    cv = comp.cv
    return f"holdout {cv.holdout:g}, seed {cv.seed}" if cv.holdout is not None else f"{cv.folds}-fold, seed {cv.seed}"


@dataclass(frozen=True)
class Coverage:
    """What a CV score was actually computed on: the split, and the folds, repeats and rows that ran
    (a time limit runs fewer). A champion is displaced only by a score on as much."""

    split: str
    folds: int
    repeats: int
    rows: int

    @classmethod
    def of(cls, comp: Competition, result: Any) -> Coverage:
        """``comp``: the config the CV ran (its cut folds); ``result``: the CV result."""
        held = np.asarray(result.folds)[np.asarray(result.folds) >= 0]
        return cls(split_of(comp), len(np.unique(held)), max(1, len(result.repeats)), len(held))

    def tags(self) -> dict[str, str]:
        return {"folds": self.split, "folds_run": str(self.folds), "repeats_run": str(self.repeats),
                "rows_run": str(self.rows)}

    @classmethod
    def from_tags(cls, tags: dict) -> Coverage | None:
        try:
            return cls(tags["folds"], int(tags["folds_run"]), int(tags["repeats_run"]), int(tags["rows_run"]))
        except (KeyError, ValueError):
            return None  # a version registered before these tags: its split alone is known

    def counts(self) -> tuple[int, int, int]:
        return self.folds, self.repeats, self.rows

    def __str__(self) -> str:
        plural = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"  # noqa: E731
        return f"{self.split}: {plural(self.folds, 'fold')}, {plural(self.repeats, 'repeat')}, {self.rows} rows"


def register(comp: Competition, run_id: str, metric: Metric, score: float, coverage: Coverage) -> str:
    """The run's model as a new version of the model named after the competition, tagged with the
    folds, repeats and rows its CV score ``coverage`` covers. ``@champion`` moves to it when no
    version has the alias yet; or on the same metric and split, when its score covers more (every
    count at least the champion's, one more), or as much and is better. A score on fewer folds,
    repeats or rows never displaces one on more. Returns the new version."""
    tags = {"run_id": run_id, "metric": metric.name, "cv_score": repr(float(score)), **coverage.tags()}
    why = []

    def beats(champion: dict | None) -> bool:
        if champion is None:
            return True
        if champion.get("metric") != metric.name or champion.get("folds") != coverage.split:
            why.append(f"its score is on {champion.get('metric')}, {champion.get('folds')}")
            return False
        held = Coverage.from_tags(champion)
        if held is not None and held.counts() != coverage.counts():
            if all(a >= b for a, b in zip(coverage.counts(), held.counts(), strict=True)):
                return True  # the champion's score covers less: not a fair bar
            why.append(f"its score covers more ({held}) than this run's ({coverage})")
            return False
        best = float(champion["cv_score"])
        return score > best if metric.greater_is_better else score < best

    name = registered_name(comp.name)
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Created version ..." there
        version, champion = tracking.register_model(f"runs:/{run_id}/{tracking.MODEL}", name, tags, CHAMPION, beats)
    if champion == version:
        say(f"registered model {name} version {version}, now @{CHAMPION} (cv {metric.name} {score:.5f}, {coverage})")
    else:
        say(f"registered model {name} version {version}; @{CHAMPION} stays on version {champion}"
            + (f": {why[0]}" if why else ""))
    return version
