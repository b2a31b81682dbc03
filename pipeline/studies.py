"""Optuna studies: one per (competition, model), named ``<competition>/<model>``, and where they live.

Storage
    ``--storage``, else ``$OPTUNA_STORAGE``, else ``.optuna/journal.log`` under the current folder:
    an Optuna journal file (``JournalStorage`` + ``JournalFileBackend``), whose appends are
    serialised by a lock file, so several worker processes on one machine share it without
    "database is locked" errors. A URL (``postgresql://...``, ``mysql://...``, ``sqlite:///...``)
    selects ``RDBStorage`` with heartbeats, which is how workers on many machines share one study.
    SQLite is accepted but is a poor choice for concurrent workers.

Best params
    :func:`best_params` is what ``train``/``submit`` start from: the model params of the study's
    best COMPLETE trial, as the model's search space returned them (the trial's ``model_params``
    user attr), so derived params such as the MLP's ``hidden`` come back verbatim. It only reads:
    a storage or study that does not exist is not created.

This module runs no trial and knows no stage or task; :mod:`pipeline.tune` does the tuning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from pipeline.config import Competition
from pipeline.data.files import check_writable
from pipeline.errors import UserError

DEFAULT_JOURNAL = Path(".optuna") / "journal.log"
HEARTBEAT_INTERVAL = 10  # seconds between a worker's heartbeats (RDB storages)
GRACE_PERIOD = 60  # seconds without a heartbeat before another worker fails the trial


def study_name(comp: Competition, model: str) -> str:
    return f"{comp.name}/{model}"


def storage_url(storage: str | os.PathLike | None = None) -> str:
    """``storage``, else ``$OPTUNA_STORAGE``, else the journal file ``.optuna/journal.log``.

    A URL is returned as given; a journal file as an absolute path.
    """
    chosen = str(storage or os.environ.get("OPTUNA_STORAGE") or DEFAULT_JOURNAL)
    return chosen if is_url(chosen) else str(Path(chosen).expanduser().resolve())


def is_url(storage: str) -> bool:
    """An RDB URL (``scheme://...``), as opposed to a journal file's path."""
    return "://" in storage


def describe_storage(url: str) -> str:
    """The storage for printing and logging: a URL's password hidden, a file path as given."""
    if not is_url(url):
        try:
            return str(Path(url).relative_to(Path.cwd()))
        except ValueError:
            return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: say nothing of its contents
        return url.split("://", 1)[0] + "://..."


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_storage(url: str, *, create: bool) -> optuna.storages.BaseStorage | None:
    """The storage at ``url``; with ``create=False``, None when it does not exist yet."""
    if not is_url(url):
        path = Path(url)
        if not path.is_file() and not create:
            return None
        if create:  # before any trial: a folder that takes no file is one line, not an OSError
            check_writable(path, "Optuna storage")
            if path.is_file() and not os.access(path, os.W_OK):
                raise UserError(f"Optuna storage {path}: the file is read-only")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The default lock (a symlink) is the one optuna-dashboard uses on a journal file too.
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise UserError(f"Optuna storage {path}: cannot write there ({exc.strerror or exc})") from None

    if url.startswith("sqlite:///") and not create and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if not create and not _has_studies_table(url, engine_kwargs):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" in Optuna 5
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=GRACE_PERIOD,
            )
        except (ImportError, ModuleNotFoundError) as exc:
            raise UserError(f"Optuna storage {describe_storage(url)}: {exc} (pip install -e '.[dev]')") from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise UserError(f"cannot open the Optuna storage {describe_storage(url)}: {first_line(exc)}") from None


def _has_studies_table(url: str, engine_kwargs: dict) -> bool:
    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs)
    except (ImportError, ModuleNotFoundError) as exc:  # e.g. the database driver
        raise UserError(f"Optuna storage {describe_storage(url)}: {exc} (pip install -e '.[dev]')") from None
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    except sqlalchemy.exc.OperationalError as exc:
        raise UserError(f"cannot open the Optuna storage {describe_storage(url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()


def load_study(url: str, name: str, *, create: bool = False, direction: str | None = None) -> optuna.Study | None:
    """The study, or None when the storage or the study does not exist (and ``create`` is false).

    With ``create=True`` the storage and the study are made as needed (``direction`` for a new one).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, create=create)
    if storage is None:
        return None
    if create:
        return optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def best_params(comp: Competition, model: str, storage: str | None = None) -> dict | None:
    """The model params of the study's best COMPLETE trial, or None when there is no such trial.

    Reads only: a missing storage or study is not created.
    """
    study = load_study(storage_url(storage), study_name(comp, model))
    if study is None:
        return None
    try:
        best = study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None
    return model_params(best)


def model_params(trial: optuna.trial.FrozenTrial) -> dict:
    """What the trial's search space returned (its ``model_params`` user attr, tuples restored),
    else its raw Optuna params."""
    stored = trial.user_attrs.get("model_params")
    if stored is None:
        return dict(trial.params)
    return {key: tuple(value) if isinstance(value, list) else value for key, value in stored.items()}


def jsonable(params: dict) -> dict:
    """``params`` as a user attr can hold them: tuples as lists, numpy scalars as Python ones."""

    def convert(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if hasattr(value, "item"):  # numpy scalars
            return value.item()
        return value

    return {key: convert(value) for key, value in params.items()}
