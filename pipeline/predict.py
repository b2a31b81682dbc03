"""Score a file with a logged model, without training: ``python -m pipeline predict``.

The model is any model a ``train`` or ``submit`` logged (``runs:/<run id>/model``) or a
registered version (``models:/house-prices@champion``, ``models:/house-prices/3``). Its metadata
(``pipeline.models_io``) names the competition, the id and target columns and what its output
is, so nothing else is needed: the input is read and checked against the model's signature
(a missing column or text in a numeric column is one line naming it), the predictions are
shaped like ``sample_submission.csv`` (found beside the input, else made from the ids) and
checked as ``submit`` checks its own, and the file is written atomically: bad input leaves an
earlier submission as it was.

``serve_command`` is the ``mlflow models serve`` that ``make serve`` runs, on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from features.tabular import category_label
from pipeline import models_io, store_checks, submission, tracking
from pipeline.data.files import check_not_an_input
from pipeline.data.tabular import read_csv
from pipeline.errors import UserError
from pipeline.outputs import check_output


def model_metadata(model, uri: str, competition: str | None = None) -> dict:
    """The pipeline's metadata of a loaded model, checked to be of ``competition`` when given."""
    meta = model.metadata.metadata or {}
    if "competition" not in meta:
        raise UserError(f"{uri} was not logged by this pipeline: its metadata names no competition")
    if competition is not None and competition != meta["competition"]:
        raise UserError(f"{uri} is a model of {meta['competition']!r}, not of {competition!r}")
    return meta


def input_columns(model) -> list[tuple[str, str]]:
    """The model's input columns as (name, MLflow type), from its signature."""
    schema = model.metadata.get_input_schema()
    return [(c["name"], c["type"]) for c in schema.to_dict()] if schema is not None else []


def conform(frame: pd.DataFrame, columns: list[tuple[str, str]], name: str) -> pd.DataFrame:
    """The model's input columns of ``frame``, typed as its signature says: numbers as float64,
    text as objects (20.0 read as a number is the category "20", as in training)."""
    missing = [column for column, _ in columns if column not in frame.columns]
    if missing:
        many = "s" if len(missing) > 1 else ""
        raise UserError(f"{name}: missing column{many} {', '.join(map(repr, missing[:5]))} (the model's input)")
    typed = {}
    for column, column_type in columns:
        values = frame[column]
        if column_type in (models_io.NUMERIC_TYPE, "double", "float", "long", "integer"):
            parsed = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & parsed.isna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise UserError(f"{name}: column {column!r} is numeric but row {row + 2} holds {values.iloc[row]!r}")
            typed[column] = parsed.astype("float64")
        elif column_type == "string":
            typed[column] = values.astype(object).map(
                lambda v: v if isinstance(v, str) or pd.isna(v) else category_label(v))
        else:
            typed[column] = values
    return pd.DataFrame(typed, index=frame.index)


def score(model, meta: dict, frame: pd.DataFrame, name: str) -> np.ndarray:
    """The model's submission values for the rows of ``frame`` (read from ``name``)."""
    typed = conform(frame, input_columns(model), name)
    try:
        values = np.asarray(model.predict(typed))
    except Exception as exc:  # MLflow's schema checks, a model's own: the input, not a bug here
        raise UserError(f"{name}: the model cannot score it: {(str(exc).strip() or type(exc).__name__).splitlines()[-1]}") from None
    if meta.get("output") == "proba" and values.ndim == 2 and values.shape[1] == 2:
        values = values[:, 1]  # P(positive class), as the submission holds it
    submission.check_finite(values, meta["competition"], name)
    return values


def write(meta: dict, frame: pd.DataFrame, values: np.ndarray, output: Path, sample_path: Path | None) -> int:
    """Shape ``values`` like the sample (``sample_path``, else made from the ids), check, write atomically."""
    id_column, target = meta["id"], meta["target"]
    # Ids as text, as the input and the sample are read; an input without ids is numbered 1, 2, ...
    ids = (frame[id_column] if id_column in frame.columns
           else pd.Series(np.arange(1, len(frame) + 1).astype(str), name=id_column))
    if sample_path is not None and Path(sample_path).is_file():
        sample = read_csv(Path(sample_path), dtype={id_column: "str"})
        if id_column not in sample.columns:
            raise UserError(f"{sample_path}: missing column {id_column!r}")
    else:
        sample = pd.DataFrame({id_column: ids.to_numpy(), target: 0 if meta["labels"] else 0.0})
    written = submission.finalize(sample, ids, values, id_column=id_column, positive=bool(meta["positive"]),
                                  labels=bool(meta["labels"]), path=Path(output))
    return len(written)


def default_input(meta: dict, data_dir: Path | None) -> Path:
    return Path(data_dir or Path("data") / meta["competition"]) / meta["test_file"]


def predict(uri: str, *, output: Path, input_path: Path | None = None, competition: str | None = None,
            data_dir: Path | None = None, sample_path: Path | None = None) -> int:
    """Score ``input_path`` (default: the competition's test file) with the model at ``uri`` and
    write the submission ``output``; returns its row count."""
    check_output(Path(output), [input_path, sample_path])
    store_checks.check_reachable(tracking.tracking_uri())
    store_checks.check_model_folder(uri)  # a folder given by path: before anything runs its code
    model = tracking.load_model(uri)
    meta = model_metadata(model, uri, competition)
    input_path, sample_path = inputs(meta, input_path, data_dir, sample_path, output)
    frame = read_input(input_path, meta["id"])
    values = score(model, meta, frame, input_path.name)
    return write(meta, frame, values, output, sample_path)


def inputs(meta: dict, input_path: Path | None, data_dir: Path | None, sample_path: Path | None,
           output: Path) -> tuple[Path, Path]:
    """The rows to score (default: the competition's test file) and the sample beside them, neither
    of them ``output``, which is no file of the competition's data folder either (before scoring)."""
    data_folders = [] if input_path else [default_input(meta, data_dir).parent]
    input_path = Path(input_path) if input_path else default_input(meta, data_dir)
    sample_path = Path(sample_path) if sample_path else input_path.parent / meta["sample_submission_file"]
    check_not_an_input(Path(output), [input_path, sample_path], data_folders)
    return input_path, sample_path


def read_input(path: Path, id_column: str) -> pd.DataFrame:
    """The rows to score, their ids as written: a submission's ids are the sample's, byte for byte."""
    return read_csv(path, dtype={id_column: "str"})


def serve_command(uri: str, port: int) -> list[str]:
    """The argv that serves ``uri`` on 127.0.0.1:``port`` (``pipeline.serving``: MLflow's scoring
    server in this environment, nothing to download), over ``tracking.tracking_uri()``."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())  # models:/ and runs:/ resolve there
    return [sys.executable, "-m", "pipeline.serving", uri, str(port)]
