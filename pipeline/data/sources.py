"""Fill a data folder: the Kaggle download with credentials, else the bundled default."""

from __future__ import annotations

from pathlib import Path

from pipeline import kaggle_api
from pipeline.config import Competition
from pipeline.data.bundled import WRITERS
from pipeline.data.files import SOURCE_FILE, source_of
from pipeline.errors import UserError


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
    if use_kaggle:
        return fill_from_kaggle(comp.kaggle, data_dir)
    if comp.bundled not in WRITERS:
        raise UserError(f"unknown bundled dataset {comp.bundled!r}")
    data_dir.mkdir(parents=True, exist_ok=True)
    WRITERS[comp.bundled](data_dir)
    (data_dir / SOURCE_FILE).write_text(wanted + "\n")
    return wanted


def fill_from_kaggle(slug: str, data_dir: Path) -> str:
    """Download and unzip Kaggle's files of ``slug`` into ``data_dir``; returns the source used.
    A competition with no config is named by its slug: this is how ``make data`` reaches it."""
    wanted = f"kaggle:{kaggle_api.check_slug(slug)}"
    current = source_of(data_dir) if data_dir.is_dir() and any(
        p.name != SOURCE_FILE for p in data_dir.iterdir()) else None
    if current is not None and current != wanted:
        raise UserError(f"{data_dir} already holds data from {current}; refusing to mix in {wanted} "
                        "(use another --data-dir or empty this one)")
    if not kaggle_api.has_credentials():
        raise UserError(f"no Kaggle credentials to download {slug!r}: set KAGGLE_USERNAME/KAGGLE_KEY "
                        "(or ~/.kaggle/kaggle.json), or put the files in the data folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    kaggle_api.download(slug, data_dir)
    (data_dir / SOURCE_FILE).write_text(wanted + "\n")
    return wanted
