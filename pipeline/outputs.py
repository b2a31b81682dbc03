"""What an output may never be: a file the run reads, or anything this package keeps.

The package keeps the MLflow store (a SQLite file and its artifact root, or a ``file:`` folder),
the Optuna storage (a journal file, or a SQLite file), the training checkpoints, the image cache,
the virtual environment and the config file. A submission written over one of them loses every
run, every study or the environment itself, so ``submit``, ``predict`` and ``blend`` refuse such
an ``--output`` in one line before any work, however the path is written: relative, through
``../`` or a symlink, or in another letter case.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline import checkpoints, studies, tracking
from pipeline.data.files import check_not_an_input, check_writable
from pipeline.data.image_decode import CACHE_FOLDER
from pipeline.errors import UserError

_SQLITE_SIDE_FILES = ("", "-journal", "-wal", "-shm")  # SQLite writes these beside its database


def _sqlite_files(url: str) -> list[Path]:
    if not url.startswith("sqlite:///"):
        return []
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return [Path(path + side) for side in _SQLITE_SIDE_FILES] if path and path != ":memory:" else []


def kept() -> list[tuple[Path, str, bool]]:
    """(path, what it is, whether it is a folder) for everything the package keeps, from here."""
    uri = tracking.tracking_uri()
    found = [(path, "the MLflow store", False) for path in _sqlite_files(uri)]
    root = tracking.artifact_root(uri)
    if root is not None:
        found.append((Path(unquote(urlparse(root).path)), "the MLflow artifact store", True))
    elif uri.startswith("file:") or "://" not in uri:
        found.append((Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri),
                      "the MLflow store", True))
    storage = studies.storage_url()
    if studies.is_url(storage):
        found += [(path, "the Optuna storage", False) for path in _sqlite_files(storage)]
    else:
        found += [(Path(storage), "the Optuna storage", False), (Path(storage + ".lock"), "the Optuna storage", True)]
        if Path(storage).parent.name == studies.DEFAULT_JOURNAL.parent.name:
            found.append((Path(storage).parent, "the Optuna storage", True))
    found += [(checkpoints.ROOT, "the checkpoints folder", True),
              (Path(".venv"), "the Python environment", True)]
    if sys.prefix != sys.base_prefix:  # a virtual environment: all of it is the package's
        found.append((Path(sys.prefix), "the Python environment", True))
    return found


def _key(path: Path) -> str:
    return os.path.normcase(str(Path(path).expanduser().resolve())).casefold()


def check_not_kept(path: Path, what: str = "--output") -> None:
    """``path`` is nothing the package keeps (see the module's doc), nor inside it."""
    target = Path(path)
    key = _key(target)
    if CACHE_FOLDER.casefold() in (part.casefold() for part in Path(key).parts):
        raise UserError(f"{what} {path} is in the image cache ({CACHE_FOLDER}): write the output elsewhere")
    for kept_path, name, folder in kept():
        kept_key = _key(kept_path)
        same = key == kept_key or (target.exists() and kept_path.exists() and os.path.samefile(target, kept_path))
        inside = folder and Path(key).is_relative_to(kept_key)
        if same or inside:
            raise UserError(f"{what} {path} is {'in ' if inside and not same else ''}{name} ({kept_path}): "
                            "write the output elsewhere")


def check_output(path: Path, inputs: list[Path | None], data_folders: list[Path | None] = (),
                 what: str = "--output") -> None:
    """Before any work: ``path`` can be written, and is neither an input nor anything kept."""
    check_not_an_input(Path(path), inputs, data_folders, what)
    check_not_kept(Path(path), what)
    check_writable(Path(path), what)
