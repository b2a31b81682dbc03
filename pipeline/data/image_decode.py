"""Image files (PNG, JPG, ...) to one uint8 array: checked, decoded by worker processes, cached.

``scan`` opens each file's header only (size and mode) and settles the shape every image gets:
the size set in the config (``image_size = N``), the one size all files share
(``image_size = "fixed"`` insists on it), or else an inferred square side, the median short side
capped at ``MAX_INFERRED_SIDE``. One channel when every file is gray, else three (RGB).

``decode`` reads the files with Pillow in a ``torch.utils.data.DataLoader`` with worker processes,
resized bilinearly. ``load_cached`` keeps the result as a ``.npy`` file in ``.image_cache/`` beside
the data, named by a hash of the file list (names, sizes, modification times) and the shape, so
that a second run does not decode again and a changed file is decoded anew.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pipeline.console import say
from pipeline.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
# Larger photos are resized to at most this side by default: a CPU trains on 64×64 images in
# minutes, not hours. ``image_size = N`` in the config sets any other.
MAX_INFERRED_SIDE = 64
CACHE_FOLDER = ".image_cache"
DECODE_BATCH = 64
PARALLEL_FROM = 512  # fewer files decode faster in this process than worker start-up costs
MAX_WORKERS = 4


@dataclass(frozen=True)
class Shape:
    channels: int  # 1 (gray) or 3 (RGB)
    side: int  # every image becomes side×side

    def key(self) -> str:
        return f"{self.channels}x{self.side}"


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (numbers by value: 2.png before 10.png);
    a symlink to a file outside ``folder`` is not followed."""
    found = [p for p in Path(folder).iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and stays_inside(p, folder)]
    return sorted(found, key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.name))


def stays_inside(path: Path, folder: Path) -> bool:
    """``path`` is no symlink, or one to somewhere inside ``folder``."""
    return not path.is_symlink() or path.resolve().is_relative_to(Path(folder).resolve())


def scan(paths: Sequence[Path], image_size: int | str | None) -> Shape:
    """The shape every image gets; a file Pillow cannot read, or a size that differs under
    ``image_size = "fixed"``, is a ``UserError`` naming the file."""
    if not paths:
        raise UserError("no image files to read")
    sizes, gray = [], True
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
                gray = gray and image.mode in GRAY_MODES
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise UserError(f"{path}: not a readable image ({type(err).__name__}"
                            f"{': ' + str(err).splitlines()[0] if isinstance(err, Image.DecompressionBombError) else ''})") from None
        if image_size == "fixed" and sizes[-1] != sizes[0]:
            (w0, h0), (w, h) = sizes[0], sizes[-1]
            raise UserError(f"{path}: {w}×{h} pixels where {paths[0].name} has {w0}×{h0} "
                            '(image_size = "fixed" needs one size; set image_size = N to resize)')
    channels = 1 if gray else 3
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return Shape(channels, image_size)
    if image_size == "fixed" or len(set(sizes)) == 1 and sizes[0][0] == sizes[0][1] <= MAX_INFERRED_SIDE:
        width, height = sizes[0]
        if width != height:
            raise UserError(f"{paths[0]}: {width}×{height} pixels is not square; set image_size = N to resize")
        return Shape(channels, width)
    return Shape(channels, int(min(np.median([min(s) for s in sizes]), MAX_INFERRED_SIDE)))


def decode_one(path: Path, shape: Shape) -> np.ndarray:
    """One file as uint8 (channels, side, side)."""
    with Image.open(path) as image:
        image = image.convert("L" if shape.channels == 1 else "RGB")
        if image.size != (shape.side, shape.side):
            image = image.resize((shape.side, shape.side), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if shape.channels == 1 else pixels.transpose(2, 0, 1)


class _Decoded(torch.utils.data.Dataset):
    """Item i: (i, pixels, error). A worker reports a bad file instead of raising, so that the
    main process can name it in one line."""

    def __init__(self, paths: Sequence[Path], shape: Shape):
        self.paths, self.shape = list(paths), shape

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, decode_one(self.paths[i], self.shape), ""
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            return i, None, f"{type(err).__name__}: {err}"


def _keep(batch):
    return batch


def decode(paths: Sequence[Path], shape: Shape, workers: int | None = None) -> np.ndarray:
    """Every file as uint8 (N, channels, side, side), decoded by ``workers`` processes (default:
    up to MAX_WORKERS, none for a few hundred files)."""
    if workers is None:
        workers = 0 if len(paths) < PARALLEL_FROM else min(MAX_WORKERS, os.cpu_count() or 1)
    out = np.empty((len(paths), shape.channels, shape.side, shape.side), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(_Decoded(paths, shape), batch_size=DECODE_BATCH, num_workers=workers,
                                         collate_fn=_keep)
    for batch in loader:
        for i, pixels, error in batch:
            if error:
                raise UserError(f"{paths[i]}: not a readable image ({error.splitlines()[0]})")
            out[i] = pixels
    return out


def fingerprint(paths: Sequence[Path], shape_key: str) -> str:
    """A hash of the files' names, sizes and modification times, and the shape asked for."""
    digest = hashlib.sha256(shape_key.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def load_cached(paths: Sequence[Path], cache_dir: Path, name: str, image_size: int | str | None = None,
                shape: Shape | None = None) -> np.ndarray:
    """The files decoded (``shape``, else :func:`scan`'s), from ``cache_dir`` when decoded before.

    Only the hash of names, sizes and times is computed on a second run: no file is opened.
    """
    spec = shape.key() if shape is not None else f"size={image_size}"
    path = Path(cache_dir) / CACHE_FOLDER / f"{name}-{fingerprint(paths, spec)}.npy"
    if path.is_file():
        return np.load(path)
    pixels = decode(paths, shape or scan(paths, image_size))
    _save_atomic(path, pixels)
    return pixels


def _save_atomic(path: Path, pixels: np.ndarray) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a read-only data folder: decode again next time
        say(f"images not cached ({path.parent}: {err.strerror})")
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, pixels)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
