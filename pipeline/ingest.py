"""Ingest: fill a data folder (Kaggle download or bundled default) and load it, checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import kaggle_api, validate
from pipeline.config import Competition
from pipeline.errors import UserError

SOURCE_FILE = "SOURCE"
LABELS_FILE = "test_labels.csv"


def _write_bundled(name: str, dest: Path) -> dict[str, int]:
    if name == "ames":
        from pipeline.bundled import write_bundled_house_prices

        return write_bundled_house_prices(dest)
    if name == "digits":
        from pipeline.images import write_bundled_digits

        return write_bundled_digits(dest)
    raise UserError(f"unknown bundled dataset {name!r}")


def source_of(data_dir: Path) -> str:
    """``kaggle:<slug>``, ``bundled:<name>``, or ``local:<folder>`` for files the user put there."""
    marker = data_dir / SOURCE_FILE
    return marker.read_text().strip() if marker.is_file() else f"local:{data_dir}"


def fill(comp: Competition, data_dir: Path, *, prefer_bundled: bool = False) -> str:
    """Put the competition's files into ``data_dir`` and return the source used.

    Kaggle when credentials are present; otherwise the bundled default. A folder holding files
    from one source is never topped up from another: the bundled Ames table contains the Kaggle
    test houses, so mixing the two would leak labels.
    """
    present = data_dir.is_dir() and any(p.name != SOURCE_FILE for p in data_dir.iterdir())
    current = source_of(data_dir) if present else None
    use_kaggle = comp.kaggle and kaggle_api.has_credentials() and not prefer_bundled
    if use_kaggle:
        wanted = f"kaggle:{comp.kaggle}"
    elif comp.bundled:
        wanted = f"bundled:{comp.bundled}"
    else:
        raise UserError(
            f"no Kaggle credentials and no bundled data for {comp.name!r}: "
            "set KAGGLE_USERNAME/KAGGLE_KEY or put the files in the data folder"
        )
    if current is not None and current != wanted:
        raise UserError(
            f"{data_dir} already holds data from {current}; refusing to mix in {wanted} "
            "(use another --data-dir or empty this one)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    if use_kaggle:
        kaggle_api.download(comp.kaggle, data_dir)
    else:
        _write_bundled(comp.bundled, data_dir)
    (data_dir / SOURCE_FILE).write_text(wanted + "\n")
    return wanted


def has_files(comp: Competition, data_dir: Path) -> bool:
    return all((data_dir / name).is_file() for name in (comp.train_file, comp.test_file))


@dataclass
class TabularData:
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    source: str
    test_labels: pd.DataFrame | None = None  # bundled data only: the held-back answers


def load_tabular(comp: Competition, data_dir: Path) -> TabularData:
    if not data_dir.is_dir():
        raise UserError(f"data folder not found: {data_dir} (run `make data`)")
    files = (comp.train_file, comp.test_file, comp.sample_submission_file)
    train, test, sample = (validate.read_csv(data_dir / name) for name in files)
    validate.check_frames(
        train,
        test,
        sample,
        target=comp.target,
        id_column=comp.id,
        files=files,
        categorical=comp.categorical,
        positive_target=comp.target_transform == "log",
    )
    source = source_of(data_dir)
    labels = None
    if source.startswith("bundled:") and (data_dir / LABELS_FILE).is_file():
        labels = validate.read_csv(data_dir / LABELS_FILE)
    return TabularData(train=train, test=test, sample=sample, source=source, test_labels=labels)
