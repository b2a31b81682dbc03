"""Image competition files: read and check them, in any of the known layouts.

Layouts (``load_image_competition``):

- ``digit-recognizer``: Kaggle's ``train.csv`` (``label,pixel0..pixel783``) and ``test.csv``
  (``pixel0..pixel783``); submissions are ``ImageId,Label`` with ImageId counting from 1.
- ``fashion-mnist-csv``: the Kaggle Fashion-MNIST dataset, ``fashion-mnist_train.csv`` and
  ``fashion-mnist_test.csv``, both ``label,pixel1..pixel784``.
- ``fashion-mnist-idx``: the original gzipped IDX files (``train-images-idx3-ubyte.gz``, ...).

CSV pixel columns may be numbered from 0 or from 1. Every problem a user can fix (a missing
file or column, a wrong pixel count, a value outside 0..255, text, a truncated IDX file) raises
``UserError`` with one line that says where.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Competition
from pipeline.data.files import source_of
from pipeline.data.tabular import read_csv
from pipeline.errors import UserError

SIDE = 28
PIXELS = SIDE * SIDE
LABEL = "label"
LABELS_FILE = "test_labels.csv"
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type the MNIST files use
LAYOUT_FILES = {
    "digit-recognizer": ("train.csv", "test.csv"),
    "fashion-mnist-csv": ("fashion-mnist_train.csv", "fashion-mnist_test.csv"),
    "fashion-mnist-idx": (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ),
}


@dataclass(frozen=True)
class ImageData:
    X_train: np.ndarray  # uint8 (N, 28, 28)
    y_train: np.ndarray  # int64 (N,), 0..9
    X_test: np.ndarray  # uint8 (M, 28, 28)
    test_ids: np.ndarray  # int64 (M,): the submission's ImageId, 1..M
    y_test: np.ndarray | None = None  # where the files have them: Fashion-MNIST, bundled


def load_image_competition(data_dir: Path, layout: str) -> ImageData:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder not found: {data_dir} (run `make data`)")
    if layout not in LAYOUT_FILES:
        raise UserError(f"unknown image layout {layout!r}; use one of {', '.join(LAYOUT_FILES)}")
    paths = [_require(data_dir, name, layout) for name in LAYOUT_FILES[layout]]
    if layout == "digit-recognizer":
        X_train, y_train = read_image_csv(paths[0], labelled=True)
        X_test, _ = read_image_csv(paths[1], labelled=False)
        y_test = _read_test_labels(data_dir / LABELS_FILE, np.arange(1, len(X_test) + 1))
    elif layout == "fashion-mnist-csv":
        X_train, y_train = read_image_csv(paths[0], labelled=True)
        X_test, y_test = read_image_csv(paths[1], labelled=True)
    else:
        X_train, y_train = _read_idx_pair(paths[0], paths[1])
        X_test, y_test = _read_idx_pair(paths[2], paths[3])
    return ImageData(X_train, y_train, X_test, np.arange(1, len(X_test) + 1), y_test)


def _require(data_dir: Path, name: str, layout: str) -> Path:
    path = data_dir / name
    if path.is_file():
        return path
    if name.endswith(".gz") and path.with_suffix("").is_file():  # already gunzipped
        return path.with_suffix("")
    raise UserError(f"{name} not found in {data_dir} (the {layout} layout needs it)")


# --- CSV ------------------------------------------------------------------------------------


def read_image_csv(path: Path, *, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 images (N, 28, 28) and, when the file has a ``label`` column, int64 labels."""
    frame = read_csv(path)
    if labelled and LABEL not in frame.columns:
        raise UserError(
            f"{path} has no '{LABEL}' column (it starts {', '.join(map(str, frame.columns[:3]))})"
        )
    pixel_columns = [c for c in frame.columns if c != LABEL]
    if len(pixel_columns) != PIXELS:
        raise UserError(
            f"{path} has {len(pixel_columns)} pixel columns; {SIDE}×{SIDE} images need {PIXELS}"
        )
    _check_pixel_names(path, pixel_columns)
    images = _whole_numbers(frame[pixel_columns], path, "pixel value", 0, 255)
    labels = None
    if LABEL in frame.columns:
        labels = _whole_numbers(frame[[LABEL]], path, "label", 0, 9)[:, 0]
    return images.astype(np.uint8).reshape(-1, SIDE, SIDE), labels


def _check_pixel_names(path: Path, columns: list[str]) -> None:
    start = 1 if columns[0] == "pixel1" else 0
    expected = [f"pixel{i}" for i in range(start, start + PIXELS)]
    for column, name in zip(columns, expected, strict=True):
        if column != name:
            raise UserError(
                f"{path}: column {column!r} where {name!r} was expected "
                "(pixels are pixel0..pixel783 or pixel1..pixel784)"
            )


def _whole_numbers(frame: pd.DataFrame, path: Path, what: str, low: int, high: int) -> np.ndarray:
    """The frame as int64, or a UserError naming the first bad cell's line and column."""
    if all(pd.api.types.is_integer_dtype(dtype) for dtype in frame.dtypes):
        values = frame.to_numpy(dtype=np.int64)
    else:
        numbers = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(numbers) | (numbers != np.round(numbers))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            cell = frame.iat[row, col]
            shown = repr(cell) if isinstance(cell, str) else str(cell)
            problem = "missing value" if pd.isna(cell) else f"{shown} is not a whole number"
            raise UserError(f"{path}, line {row + 2}, column {frame.columns[col]}: {problem}")
        values = numbers.astype(np.int64)
    outside = (values < low) | (values > high)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise UserError(
            f"{path}, line {row + 2}, column {frame.columns[col]}: "
            f"{what} {values[row, col]} is outside {low}..{high}"
        )
    return values


def _read_test_labels(path: Path, test_ids: np.ndarray) -> np.ndarray | None:
    """The bundled data's held-back labels (``ImageId,Label``), aligned with ``test_ids``."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    aligned = list(frame.columns) == ["ImageId", "Label"] and np.array_equal(
        frame.ImageId, test_ids
    )
    if not aligned:
        raise UserError(f"{path} must be ImageId,Label with one row per test image, in order")
    return _whole_numbers(frame[["Label"]], path, "label", 0, 9)[:, 0]


# --- IDX ------------------------------------------------------------------------------------


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes with ``ndim`` dimensions, gzipped or not.

    Header: two zero bytes, the type code (0x08), the number of dimensions, then each dimension
    as a big-endian uint32; the data follows, exactly prod(dims) bytes.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise UserError(f"{path} is truncated or not gzip data: {err}") from None
    magic = int.from_bytes(raw[:4], "big")
    expected_magic = IDX_UBYTE << 8 | ndim
    if len(raw) < 4 or magic != expected_magic:
        raise UserError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes: magic number {magic:#010x}, "
            f"expected {expected_magic:#010x}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is truncated: the header needs {header} bytes, found {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    found = len(raw) - header
    if found != expected:
        shape = "×".join(map(str, dims))
        state = "truncated" if found < expected else "longer than its header says"
        raise UserError(f"{path} is {state}: {shape} needs {expected} bytes of data, found {found}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable, as torch wants


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != (SIDE, SIDE):
        raise UserError(
            f"{images_path} holds {images.shape[1]}×{images.shape[2]} images, not 28×28"
        )
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if labels.max(initial=0) > 9:
        raise UserError(f"{labels_path}: label {labels.max()} is outside 0..9")
    return images, labels.astype(np.int64)


# --- A competition's files: its layout, or the other layout of the same dataset -------------


def _layout_present(data_dir: Path, layout: str) -> bool:
    return all(
        (data_dir / name).is_file() or (name.endswith(".gz") and (data_dir / name[:-3]).is_file())
        for name in LAYOUT_FILES[layout]
    )


def resolve_layout(comp: Competition, data_dir: Path) -> str:
    """The config's layout, or the other layout of the same dataset when only its files are here."""
    if comp.layout is None:
        raise UserError(f"{comp.name}: an image competition needs a layout ({', '.join(LAYOUT_FILES)})")
    if comp.layout not in LAYOUT_FILES:
        raise UserError(f"{comp.name}: unknown image layout {comp.layout!r}; use one of {', '.join(LAYOUT_FILES)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir() or _layout_present(data_dir, comp.layout):
        return comp.layout
    family = comp.layout.rsplit("-", 1)[0]
    for other in LAYOUT_FILES:
        if other != comp.layout and other.rsplit("-", 1)[0] == family and _layout_present(data_dir, other):
            return other
    return comp.layout  # reading it names the missing file


def has_files(comp: Competition, data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a complete set of the competition's files (any of its layouts)."""
    return Path(data_dir).is_dir() and _layout_present(Path(data_dir), resolve_layout(comp, data_dir))


@dataclass
class Images:
    data: ImageData
    layout: str
    source: str
    sample: pd.DataFrame | None  # sample_submission.csv when the folder has one


def load(comp: Competition, data_dir: Path) -> Images:
    data_dir = Path(data_dir)
    layout = resolve_layout(comp, data_dir)
    data = load_image_competition(data_dir, layout)
    sample_path = data_dir / comp.sample_submission_file
    sample = read_csv(sample_path) if sample_path.is_file() else None
    return Images(data, layout, source_of(data_dir), sample)
