"""Image competitions as folders of files: which images, which labels, which test ids.

Two layouts, told apart by the training folder (the ``train`` of ``[files] train``):

- ``image-folder``: ``train/<id>.png`` (or .jpg, ...) with a labels CSV holding the id and target
  columns (CIFAR-10's ``trainLabels.csv``, Dog Breed's ``labels.csv``, Aerial Cactus'
  ``train.csv``); an id names a file by its stem or its whole name.
- ``class-folders``: ``train/<class>/*.png``, the folder name being the label.

Both take the test images from ``test/``: one per id of the sample submission when there is one
(an id no file has is an error), else every file, its stem the id. The sample is the config's
``[files] sample_submission``, else a file by any of Kaggle's spellings (``sample_submission.csv``,
``sampleSubmission.csv``, ``SampleSubmission.csv``), else the one CSV whose ids are the test
images' names (:func:`sample_file`); it is never taken for a labels file. Labels that are all whole
numbers stay numbers; other labels are text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Competition
from pipeline.console import say
from pipeline.data import checks, image_decode
from pipeline.data.tabular import read_csv
from pipeline.errors import UserError

FOLDER_LAYOUTS = ("image-folder", "class-folders")
HELD_BACK_LABELS = "test_labels.csv"  # a local copy's held-back test labels (bundled data, bench/): never a labels file


@dataclass(frozen=True)
class FolderImages:
    X_train: np.ndarray  # uint8 (N, C, S, S)
    y_train: np.ndarray  # labels: int64, or text
    X_test: np.ndarray
    test_ids: np.ndarray


def train_folder(comp: Competition, data_dir: Path) -> Path:
    return Path(data_dir) / Path(comp.train_file).stem


def test_folder(comp: Competition, data_dir: Path) -> Path:
    return Path(data_dir) / Path(comp.test_file).stem


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and image_decode.stays_inside(p, folder))


def folder_layout(comp: Competition, data_dir: Path) -> str | None:
    """``class-folders``, ``image-folder`` or None (no training folder of images here)."""
    folder = train_folder(comp, data_dir)
    if not folder.is_dir():
        return None
    if any(image_decode.image_files(d) for d in _class_dirs(folder)):
        return "class-folders"
    return "image-folder" if image_decode.image_files(folder) else None


def _is_sample_name(name: str) -> bool:
    """Kaggle's spellings of the sample submission: sample_submission.csv, sampleSubmission.csv, ..."""
    return name.lower().replace("_", "") == "samplesubmission.csv"


def _test_stems(comp: Competition, data_dir: Path) -> set[str]:
    folder = test_folder(comp, data_dir)
    return {p.stem for p in image_decode.image_files(folder)} if folder.is_dir() else set()


def _lists_ids(path: Path, id_column: str, ids: set[str]) -> bool:
    """Whether ``path``'s ``id_column`` names exactly the files ``ids`` (by stem or whole name)."""
    try:
        if id_column not in pd.read_csv(path, nrows=0).columns:
            return False
        listed = pd.read_csv(path, usecols=[id_column], dtype=str)[id_column]
    except (ValueError, UnicodeDecodeError):
        return False
    return len(listed) == len(ids) and {Path(name).stem for name in listed} == ids


def sample_file(comp: Competition, data_dir: Path) -> Path | None:
    """The sample submission: the config's file, else one by a Kaggle spelling, else the one
    CSV whose id column lists exactly the test images; None: there is none."""
    data_dir = Path(data_dir)
    if (data_dir / comp.sample_submission_file).is_file():
        return data_dir / comp.sample_submission_file
    csvs = sorted(data_dir.glob("*.csv")) if data_dir.is_dir() else []
    spelled = [p for p in csvs if _is_sample_name(p.name)]
    if spelled:
        return spelled[0]
    stems = _test_stems(comp, data_dir)
    listing = [p for p in csvs if p.name not in (comp.train_file, HELD_BACK_LABELS) and stems
               and _lists_ids(p, comp.id, stems)]
    return listing[0] if len(listing) == 1 else None


def labels_csv(comp: Competition, data_dir: Path) -> Path:
    """The CSV with the id and target columns: ``[files] train`` when it is one, else the only one
    (the sample submission, whatever its spelling, is not one)."""
    data_dir = Path(data_dir)
    sample = sample_file(comp, data_dir)
    skip = {comp.sample_submission_file, comp.test_file, HELD_BACK_LABELS, *([sample.name] if sample else [])}
    found = []
    for path in sorted(data_dir.glob("*.csv")):
        if path.name in skip or _is_sample_name(path.name):
            continue
        columns = pd.read_csv(path, nrows=0).columns
        if comp.id in columns and comp.target in columns:
            found.append(path)
    preferred = [p for p in found if p.name == comp.train_file]
    if preferred or len(found) == 1:
        return (preferred or found)[0]
    if not found:
        raise UserError(f"{data_dir}: no CSV file with the columns {comp.id!r} and {comp.target!r} "
                        f"to label the images in {train_folder(comp, data_dir)}")
    raise UserError(f"{data_dir}: several labels files ({', '.join(p.name for p in found)}); "
                    "name one with [files] train")


def _by_name(paths: list[Path]) -> dict[str, Path]:
    return {**{p.stem: p for p in paths}, **{p.name: p for p in paths}}


def as_labels(values: pd.Series, where: Path) -> np.ndarray:
    """int64 when every label is a whole number, else text; a missing one names its line."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise UserError(f"{where}, line {int(np.flatnonzero(missing)[0]) + 2}, column {values.name}: missing label")
    text = values.astype(str)
    if text.str.fullmatch(r"-?\d+").all():
        return text.astype(np.int64).to_numpy()
    return text.to_numpy(dtype=object)


def labelled_files(comp: Competition, data_dir: Path) -> tuple[list[Path], np.ndarray]:
    """``image-folder``: each training file and its label, in the labels CSV's order."""
    folder, csv = train_folder(comp, data_dir), labels_csv(comp, data_dir)
    frame = read_csv(csv, dtype={comp.id: "str"})
    files = image_decode.image_files(folder)
    by_name = _by_name(files)
    paths = []
    for row, key in enumerate(frame[comp.id].astype(str)):
        if key not in by_name:
            raise UserError(f"{csv}, line {row + 2}: no image {key!r} in {folder}")
        paths.append(by_name[key])
    unlabelled = sorted(set(files) - set(paths))
    if unlabelled:
        raise UserError(f"{unlabelled[0]}: no label in {csv} (its {comp.id} column has no "
                        f"{unlabelled[0].stem!r}; {len(unlabelled)} such file(s))")
    return paths, as_labels(frame[comp.target], csv)


def class_folder_files(comp: Competition, data_dir: Path) -> tuple[list[Path], np.ndarray]:
    """``class-folders``: every file under ``train/<class>/``, labelled by its folder."""
    paths, labels = [], []
    for folder in _class_dirs(train_folder(comp, data_dir)):
        files = image_decode.image_files(folder)
        paths += files
        labels += [folder.name] * len(files)
    values = pd.Series(labels, name="folder")
    return paths, as_labels(values, train_folder(comp, data_dir))


def test_files(comp: Competition, data_dir: Path, sample: pd.DataFrame | None) -> tuple[list[Path], np.ndarray]:
    """The test images and their ids: the sample submission's, in its order, else every file's stem."""
    folder = test_folder(comp, data_dir)
    if not folder.is_dir():
        raise UserError(f"{folder} not found: the test images go there")
    files = image_decode.image_files(folder)
    if sample is None:
        stems = pd.Series([p.stem for p in files], name=comp.id)
        ids = stems.astype(np.int64).to_numpy() if stems.str.fullmatch(r"\d+").all() else stems.to_numpy(dtype=object)
        return files, ids
    if comp.id not in sample.columns:
        raise UserError(f"{comp.sample_submission_file} has no {comp.id!r} column (it has {', '.join(sample.columns)})")
    by_name = _by_name(files)
    paths = []
    for row, key in enumerate(sample[comp.id].astype(str)):
        if key not in by_name:
            raise UserError(f"{Path(data_dir) / comp.sample_submission_file}, line {row + 2}: "
                            f"id {key!r} has no image in {folder}")
        paths.append(by_name[key])
    if len(files) > len(set(paths)):
        say(f"{folder}: {len(files) - len(set(paths))} image(s) the sample submission does not list are left out")
    return paths, sample[comp.id].to_numpy()


def read(comp: Competition, data_dir: Path, layout: str, sample: pd.DataFrame | None,
         image_size: int | str | None = None) -> FolderImages:
    """Every check first (labels, ids, file headers), then the pixels, decoded or from the cache."""
    data_dir = Path(data_dir)
    paths, labels = (labelled_files if layout == "image-folder" else class_folder_files)(comp, data_dir)
    if not paths:
        raise UserError(f"{train_folder(comp, data_dir)}: no training images")
    checks.check_target_varies(pd.Series(labels, name=comp.target), str(train_folder(comp, data_dir)))  # before decoding
    tests, ids = test_files(comp, data_dir, sample)
    X_train = image_decode.load_cached(paths, data_dir, "train", image_size)
    shape = image_decode.Shape(X_train.shape[1], X_train.shape[2])
    if image_size == "fixed" and tests:  # the test images too must have the training images' size
        image_decode.scan(paths[:1] + tests, "fixed")
    X_test = image_decode.load_cached(tests, data_dir, "test", shape=shape) if tests else X_train[:0]
    return FolderImages(X_train, labels, X_test, ids)
