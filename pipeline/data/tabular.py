"""Tabular competition files: read train, test and sample submission, checked before any work.

Every failure is a :class:`UserError` naming the file, the column and the value at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Competition
from pipeline.data import checks, csvfiles, sample_columns
from pipeline.data.files import source_of
from pipeline.errors import UserError


def read_csv(path: Path, dtype: dict[str, str] | None = None) -> pd.DataFrame:
    """A CSV file, plain or compressed, in whatever encoding and separator (``csvfiles``);
    ``dtype``: types of some of its columns (see :func:`types_for_test_file`)."""
    return csvfiles.read(path, dtype=dtype)


def types_for_test_file(train: pd.DataFrame, target: str) -> dict[str, str]:
    """The types to read the test file with, from the training file's columns: text as ``str``
    and decimals as ``float64``. Whole numbers are left to pandas (a gap in test makes them
    floats, which is no other kind), as is a column train leaves empty (its test values decide,
    :func:`checks.align`); the target is not in test."""
    types = {}
    for column in train.columns:
        series = train[column]
        if column == target or series.isna().all():
            continue
        if pd.api.types.is_float_dtype(series):
            types[column] = "float64"
        elif pd.api.types.is_string_dtype(series) and not pd.api.types.is_bool_dtype(series):
            types[column] = "str"
    return types


_PLAIN_INTEGER = r"0|-?[1-9][0-9]{0,17}"  # int64 holds 18 digits


def ids_are_plain_integers(frames: list[pd.DataFrame], id_column: str) -> bool:
    """Whether every file's ids (read as text) are integers written plainly: no leading zeros, no
    sign but a minus, no gaps. Then they are numbers; else they stay text, byte for byte as written,
    for Kaggle matches ids as text ("001060" is not 1060)."""
    for frame in frames:
        if id_column not in frame.columns:
            return False
        ids = frame[id_column]
        if ids.isna().any() or not ids.astype(str).str.fullmatch(_PLAIN_INTEGER).all():
            return False
    return True


def _integer_ids(frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
    return frame.assign(**{id_column: frame[id_column].astype("int64")})


def _first_non_numeric(series: pd.Series) -> tuple[int, object] | None:
    parsed = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & parsed.isna()
    if not bad.any():
        return None
    row = int(np.flatnonzero(bad.to_numpy())[0])
    return row, series.iloc[row]


def check_numeric_columns(
    train: pd.DataFrame, test: pd.DataFrame, names: tuple[str, str], categorical: tuple[str, ...]
) -> None:
    """Text in a numeric column: a column that is (mostly) numbers in train, or in test where train
    leaves it empty, must be numbers in both files."""
    for column in train.columns:
        if column in categorical or column not in test.columns:
            continue
        train_col, test_col = train[column], test[column]
        if not checks.is_numeric_column(train_col, test_col):
            continue  # a genuine text column
        for frame_name, series in zip(names, (train_col, test_col), strict=True):
            if pd.api.types.is_numeric_dtype(series):
                continue
            found = _first_non_numeric(series)
            if found is not None:
                row, value = found
                raise UserError(
                    f"{frame_name}: column {column!r} is numeric but row {row + 2} holds {value!r}"
                )


def check_frames(
    train: pd.DataFrame,
    test: pd.DataFrame,
    sample: pd.DataFrame,
    *,
    target: str,
    id_column: str,
    files: tuple[str, str, str],
    categorical: tuple[str, ...] = (),
    positive_target: bool = False,
    task: str | None = None,
) -> None:
    train_name, test_name, sample_name = files
    for frame, name, required in (
        (train, train_name, (id_column, target)),
        (test, test_name, (id_column,)),
        (sample, sample_name, (id_column,)),
    ):
        for column in required:
            if column not in frame.columns:
                raise UserError(f"{name}: missing column {column!r}{sample_columns.did_you_mean(column, frame.columns)}")
        missing_ids = frame[id_column].isna()
        if missing_ids.any():
            raise UserError(f"{name}: column {id_column!r} is empty at row "
                            f"{checks.file_row(int(np.flatnonzero(missing_ids.to_numpy())[0]))}: every row needs an id")
        duplicated = frame[id_column].duplicated()
        if duplicated.any():
            first = frame.loc[duplicated, id_column].tolist()[0]  # a Python value: 4, not np.int64(4)
            raise UserError(f"{name}: duplicate id {first!r} in {id_column!r}")

    features = [c for c in train.columns if c != target]
    missing = [c for c in features if c not in test.columns]
    extra = [c for c in test.columns if c not in features]
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:5])}" if missing else "",
                f"unexpected {', '.join(extra[:5])}" if extra else "",
            )
            if part
        )
        raise UserError(f"{test_name} columns differ from the training features: {detail}")

    check_numeric_columns(train, test, (train_name, test_name), categorical)

    y = train[target]
    if task in (None, "regression"):
        checks.check_numeric_target(y, train_name, task)
    if y.isna().any():
        raise UserError(f"{train_name}: target {target!r} has missing values (row {int(np.flatnonzero(y.isna())[0]) + 2})")
    if positive_target:
        if not pd.api.types.is_numeric_dtype(y):
            raise UserError(f"{train_name}: target {target!r} must be numeric")
        if (y <= 0).any():
            raise UserError(f"{train_name}: target {target!r} must be positive for the log transform")

    if set(sample[id_column]) != set(test[id_column]):
        raise UserError(f"{sample_name}: its ids differ from the ids in {test_name}")



LABELS_FILE = "test_labels.csv"  # bundled data only: the held-back answers


def has_files(comp: Competition, data_dir: Path) -> bool:
    return all((Path(data_dir) / name).is_file() for name in (comp.train_file, comp.test_file))


@dataclass
class TabularData:
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    source: str
    test_labels: pd.DataFrame | None = None  # bundled data only: the held-back answers


def load(comp: Competition, data_dir: Path) -> TabularData:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder not found: {data_dir} (run `make data`)")
    files = (comp.train_file, comp.test_file, comp.sample_submission_file)
    id_type = {comp.id: "str"}  # ids as written ("001060"), until all three files show plain integers
    train = read_csv(data_dir / files[0], dtype=id_type)
    types = types_for_test_file(train, comp.target)
    test = read_csv(data_dir / files[1], dtype={**types, **id_type})
    sample = read_csv(data_dir / files[2], dtype=id_type)
    integer_ids = ids_are_plain_integers([train, test, sample], comp.id)
    train, test, sample = (_integer_ids(frame, comp.id) if integer_ids else frame for frame in (train, test, sample))
    check_frames(
        train,
        test,
        sample,
        target=comp.target,
        id_column=comp.id,
        files=files,
        categorical=(*comp.categorical, comp.id),  # ids stay as read: text, or plain integers
        positive_target=comp.target_transform == "log",
        task=comp.task,
    )
    checks.check_sample(sample, comp.id, files[2], train[comp.target])
    checks.check_rows(train, comp.cv.folds, files[0])
    checks.check_target_varies(train[comp.target], files[0])
    train, test = checks.align(train, test, target=comp.target, categorical=(*comp.categorical, comp.id))
    checks.check_finite(train, files[0])
    checks.check_finite(test, files[1])
    source = source_of(data_dir)
    labels = None
    if source.startswith("bundled:") and (data_dir / LABELS_FILE).is_file():
        labels = read_csv(data_dir / LABELS_FILE, dtype=id_type)
        labels = _integer_ids(labels, comp.id) if integer_ids else labels
    return TabularData(train=train, test=test, sample=sample, source=source, test_labels=labels)
