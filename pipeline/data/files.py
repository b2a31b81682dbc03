"""Writing files so that readers never see a half-written one, and a failed run clobbers nothing."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from pipeline.errors import UserError

SOURCE_FILE = "SOURCE"  # in a data folder: where its files came from


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, index=False, lineterminator=_line_end(frame))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a submission is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _line_end(frame: pd.DataFrame) -> str:
    """``\\n``, unless a text value holds a CR: the csv module quotes a value holding a character
    of its line end only, so then every line ends ``\\r\\n`` (RFC 4180's own line end) and that
    value is quoted, and read back as one field."""
    text = frame.select_dtypes(exclude=["number", "bool"])
    holds_cr = any(text[column].astype(str).str.contains("\r", regex=False).any() for column in text.columns)
    return "\r\n" if holds_cr else "\n"


@contextmanager
def staged(path: Path | None) -> Iterator[Path | None]:
    """A path of the same name as ``path`` in a temporary folder beside it, removed at the end with
    whatever is still in it: write there, and ``os.replace`` it onto ``path`` once nothing can fail.
    None for None."""
    if path is None:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent) as folder:
        yield Path(folder) / path.name


def remove_stale_stages(path: Path) -> list[Path]:
    """Remove the temporary folders beside ``path`` that ``staged`` made in a process now gone
    (``kill -9`` during the final write): their names hold the process id. Returns them."""
    removed = []
    for folder in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*"):
        pid = folder.name[len(Path(path).name) + 2:].split(".", 1)[0]
        if folder.is_dir() and not folder.is_symlink() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def check_writable(path: Path, what: str = "--output") -> None:
    """Before any work: ``path`` names a file (not a folder) that can be written, its folder
    existing or creatable. Probes with an unnamed temporary file, so that it also holds for root
    and for read-only file systems; writes nothing that stays."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder: name a file in it, e.g. {path / 'submission.csv'}")
    if path.exists() and not path.is_file():
        raise UserError(f"{what} {path} is not a regular file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{what} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc})") from None


def check_not_an_input(path: Path, inputs: list[Path | None], data_folders: list[Path | None] = (),
                       what: str = "--output") -> None:
    """Before any work: ``path`` is none of the ``inputs`` (data files, config, the rows to score),
    whichever way it is written (relative, through a symlink, a hard link), nor a file already in
    a subfolder of one of ``data_folders`` (where image competitions keep their images): a run
    never overwrites what it reads. A new file there, or an earlier submission beside the data
    files (``--data-dir .``), is fine."""
    target = Path(path).resolve()
    for given in (Path(p) for p in inputs if p is not None):
        source = given.resolve()
        if target == source or (target.exists() and source.exists() and os.path.samefile(target, source)):
            raise UserError(f"{what} {path} is the input file {given}: write the output elsewhere")
    for folder in (Path(f).resolve() for f in data_folders if f is not None):
        if target.exists() and target.is_relative_to(folder) and target.parent != folder:
            raise UserError(f"{what} {path} is a file of the data folder {folder}: write the output elsewhere")


def write_frames(dest: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Write each frame as ``dest/<name>`` CSV: all into a temporary folder first, then renamed."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        for name, frame in frames.items():
            frame.to_csv(Path(tmp) / name, index=False, lineterminator="\n")
        for name in frames:
            os.replace(Path(tmp) / name, dest / name)


def source_of(data_dir: Path) -> str:
    """``kaggle:<slug>``, ``bundled:<name>``, or ``local:<folder>`` for files the user put there."""
    marker = data_dir / SOURCE_FILE
    return marker.read_text().strip() if marker.is_file() else f"local:{data_dir}"
