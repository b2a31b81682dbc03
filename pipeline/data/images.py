"""Image competition files: read and check them, in any of the known layouts.

Layouts (``resolve_layout``: the config's ``layout``, else inferred from the files):

- ``pixel-csv``: one row per image, the target column and one column per pixel (``pixel0..`` or
  ``pixel1..``), any square side, gray (S×S columns) or colour (3×S×S, in row, column, channel
  order); the test CSV has the pixels and maybe the id column (else ids count from 1). Three
  named instances keep their files' names:

  - ``digit-recognizer``: Kaggle's ``train.csv`` (``label,pixel0..pixel783``) and ``test.csv``;
    submissions are ``ImageId,Label`` with ImageId counting from 1.
  - ``fashion-mnist-csv``: ``fashion-mnist_train.csv`` and ``fashion-mnist_test.csv``, both
    labelled.
  - ``fashion-mnist-idx``: the original gzipped IDX files (``train-images-idx3-ubyte.gz``, ...).
- ``image-folder`` and ``class-folders``: PNG/JPG files (``pipeline.data.image_folders``),
  decoded and cached by ``pipeline.data.image_decode``.

Images are uint8, (N, S, S) when gray and (N, 3, S, S) in colour; labels are whole numbers or
text. Every problem a user can fix (a missing file or column, a wrong pixel count, a value
outside 0..255, text, a truncated IDX file, an unreadable image) raises ``UserError`` with one
line that says where.
"""

from __future__ import annotations

import gzip
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Competition
from pipeline.console import say
from pipeline.data import image_folders
from pipeline.data.files import source_of
from pipeline.data.tabular import read_csv
from pipeline.errors import UserError

SIDE = 28  # the digits' and Fashion-MNIST's side
PIXELS = SIDE * SIDE
LABEL = "label"
LABELS_FILE = image_folders.HELD_BACK_LABELS
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
PIXEL_CSV = "pixel-csv"
LAYOUTS = (*LAYOUT_FILES, PIXEL_CSV, *image_folders.FOLDER_LAYOUTS)
PIXEL_NAME = re.compile(r"pixel\d+")
GRAY_SAMPLE = 256  # images whose channels are compared to tell gray stored as RGB from colour


@dataclass(frozen=True)
class ImageData:
    X_train: np.ndarray  # uint8 (N, S, S) gray or (N, 3, S, S) colour
    y_train: np.ndarray  # (N,) labels: int64, or text
    X_test: np.ndarray  # uint8, as X_train
    test_ids: np.ndarray  # (M,): the submission's ids (ImageId 1..M where the files have none)
    y_test: np.ndarray | None = None  # where the files have them: Fashion-MNIST, bundled


def load_image_competition(data_dir: Path, layout: str, *, target: str = LABEL, id_column: str | None = None,
                           files: tuple[str, str] = ("train.csv", "test.csv")) -> ImageData:
    """A pixel-CSV or IDX layout's images; ``files``, ``target`` and ``id_column``: a ``pixel-csv``'s."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder not found: {data_dir} (run `make data`)")
    if layout not in (*LAYOUT_FILES, PIXEL_CSV):
        raise UserError(f"unknown image layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    paths = [_require(data_dir, name, layout) for name in LAYOUT_FILES.get(layout, files)]
    if layout in ("digit-recognizer", PIXEL_CSV):
        X_train, y_train = read_image_csv(paths[0], labelled=True, target=target, id_column=id_column)
        X_test, _ = read_image_csv(paths[1], labelled=False, target=target, id_column=id_column)
        test_ids = np.arange(1, len(X_test) + 1)
        if layout == PIXEL_CSV and id_column is not None and id_column in _header(paths[1]):
            test_ids = read_csv(paths[1])[id_column].to_numpy()
        return ImageData(X_train, y_train, X_test, test_ids, _read_test_labels(data_dir / LABELS_FILE, test_ids))
    if layout == "fashion-mnist-csv":
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


def _header(path: Path) -> list[str]:
    return [str(c) for c in pd.read_csv(path, nrows=0).columns]


# --- CSV ------------------------------------------------------------------------------------


def pixel_shape(count: int) -> tuple[int, int] | None:
    """(channels, side) of ``count`` pixel columns: S×S gray or 3×S×S colour; None: neither."""
    for channels in (1, 3):
        side = math.isqrt(count // channels)
        if count % channels == 0 and side * side * channels == count and side > 0:
            return channels, side
    return None


def read_image_csv(path: Path, *, labelled: bool, target: str = LABEL,
                   id_column: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 images and, when the file has the ``target`` column, their labels."""
    frame = read_csv(path)
    if labelled and target not in frame.columns:
        raise UserError(
            f"{path} has no '{target}' column (it starts {', '.join(map(str, frame.columns[:3]))})"
        )
    pixel_columns = [c for c in frame.columns if c not in (target, id_column)]
    shape = pixel_shape(len(pixel_columns))
    if shape is None:
        raise UserError(f"{path} has {len(pixel_columns)} pixel columns: not S×S (gray) or 3×S×S (colour) "
                        f"for any side S ({SIDE}×{SIDE} images need {PIXELS})")
    _check_pixel_names(path, pixel_columns)
    images = _whole_numbers(frame[pixel_columns], path, "pixel value", 0, 255).astype(np.uint8)
    channels, side = shape
    images = images.reshape(-1, side, side) if channels == 1 else \
        images.reshape(-1, side, side, channels).transpose(0, 3, 1, 2).copy()
    labels = image_folders.as_labels(frame[target], path) if target in frame.columns else None
    return images, labels


def _check_pixel_names(path: Path, columns: list[str]) -> None:
    start = 1 if columns[0] == "pixel1" else 0
    expected = [f"pixel{i}" for i in range(start, start + len(columns))]
    for column, name in zip(columns, expected, strict=True):
        if column != name:
            raise UserError(
                f"{path}: column {column!r} where {name!r} was expected "
                f"(pixels are pixel0..pixel{len(columns) - 1} or pixel1..pixel{len(columns)})"
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
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


# --- A competition's files: its layout, or the one its files show ------------------------


def _layout_present(data_dir: Path, layout: str) -> bool:
    return all(
        (data_dir / name).is_file() or (name.endswith(".gz") and (data_dir / name[:-3]).is_file())
        for name in LAYOUT_FILES[layout]
    )


def _is_pixel_csv(comp: Competition, data_dir: Path) -> bool:
    """A training CSV with the target and only ``pixel<i>`` columns besides (and maybe the id)."""
    train, test = data_dir / comp.train_file, data_dir / comp.test_file
    if not (train.is_file() and test.is_file()):
        return False
    try:
        header = _header(train)
    except (UnicodeDecodeError, ValueError):  # not this reader's to judge: the tabular one says what is wrong
        return False
    columns = [c for c in header if c not in (comp.target, comp.id)]
    return comp.target in header and pixel_shape(len(columns)) is not None and all(
        PIXEL_NAME.fullmatch(c) for c in columns)


def detect_layout(comp: Competition, data_dir: Path) -> str | None:
    """The layout the files in ``data_dir`` show; None: no image competition's files."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return None
    for layout in ("fashion-mnist-csv", "fashion-mnist-idx"):  # digit-recognizer's are a pixel-csv's
        if _layout_present(data_dir, layout):
            return layout
    return image_folders.folder_layout(comp, data_dir) or (PIXEL_CSV if _is_pixel_csv(comp, data_dir) else None)


def resolve_layout(comp: Competition, data_dir: Path) -> str:
    """The config's layout (or the other layout of the same dataset when only its files are
    here), else the layout the files show."""
    data_dir = Path(data_dir)
    if comp.layout is None:
        found = detect_layout(comp, data_dir)
        if found is None:
            raise UserError(f"{data_dir}: no image files found (a {comp.train_file} of pixel columns, or a "
                            f"{image_folders.train_folder(comp, data_dir).name}/ folder of images and a labels CSV "
                            "or one folder per class); or name a layout: " + ", ".join(LAYOUTS))
        return found
    if comp.layout not in LAYOUTS:
        raise UserError(f"{comp.name}: unknown image layout {comp.layout!r}; use one of {', '.join(LAYOUTS)}")
    if comp.layout not in LAYOUT_FILES or not data_dir.is_dir() or _layout_present(data_dir, comp.layout):
        return comp.layout
    family = comp.layout.rsplit("-", 1)[0]
    for other in LAYOUT_FILES:
        if other != comp.layout and other.rsplit("-", 1)[0] == family and _layout_present(data_dir, other):
            return other
    return comp.layout  # reading it names the missing file


def has_files(comp: Competition, data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a complete set of the competition's files (any of its layouts)."""
    data_dir = Path(data_dir)
    if comp.layout is None:
        return detect_layout(comp, data_dir) is not None
    layout = resolve_layout(comp, data_dir)
    if layout in LAYOUT_FILES:
        return data_dir.is_dir() and _layout_present(data_dir, layout)
    return data_dir.is_dir() and detect_layout(comp, data_dir) == layout


@dataclass
class Images:
    data: ImageData
    layout: str
    source: str
    sample: pd.DataFrame | None  # sample_submission.csv when the folder has one


def load(comp: Competition, data_dir: Path) -> Images:
    data_dir = Path(data_dir)
    layout = resolve_layout(comp, data_dir)
    folders = layout in image_folders.FOLDER_LAYOUTS
    sample_path = image_folders.sample_file(comp, data_dir) if folders else data_dir / comp.sample_submission_file
    # Folder ids name files: read as text, so that "007" stays "007".
    sample = read_csv(sample_path, dtype={comp.id: "str"} if folders else None) \
        if sample_path is not None and sample_path.is_file() else None
    if folders:
        found = image_folders.read(comp, data_dir, layout, sample, comp.image_size)
        data = ImageData(_squeeze(found.X_train), found.y_train, _squeeze(found.X_test), found.test_ids)
    else:
        data = load_image_competition(data_dir, layout, target=comp.target, id_column=comp.id,
                                      files=(comp.train_file, comp.test_file))
    if data.X_train.ndim == 4 and gray_in_colour(data.X_train):
        say(f"pixels: the three channels are equal in {min(GRAY_SAMPLE, len(data.X_train))} sampled training "
            "images: read as one gray channel")
        data = replace(data, X_train=as_gray(data.X_train), X_test=as_gray(data.X_test))
    return Images(data, layout, source_of(data_dir), sample)


def _squeeze(images: np.ndarray) -> np.ndarray:
    """Gray images as (N, S, S), like the pixel CSVs'."""
    return images[:, 0] if images.shape[1] == 1 else images


def gray_in_colour(images: np.ndarray, seed: int = 0) -> bool:
    """Whether colour images (N, 3, S, S) are gray ones stored as RGB: the three channels equal in
    every one of GRAY_SAMPLE images drawn at random."""
    rows = np.random.default_rng(seed).choice(len(images), min(GRAY_SAMPLE, len(images)), replace=False)
    sample = images[np.sort(rows)]
    return bool((sample[:, 0] == sample[:, 1]).all() and (sample[:, 1] == sample[:, 2]).all())


def as_gray(images: np.ndarray) -> np.ndarray:
    """(N, S, S): the mean of the channels (a gray image's own pixels; the brightness of any the
    sample missed that has colour)."""
    return images.mean(axis=1, dtype=np.float32).round().astype(np.uint8) if images.ndim == 4 else images
