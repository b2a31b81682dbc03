"""Checks on the stores a run writes to, before and while it writes: a tracking server that is
not there, a full disk, a parameter name MLflow refuses, a model folder that is not ours.

Nothing here imports MLflow (``pipeline.tracking`` is the one module that does); the callers pass
the store's URI.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from pipeline.errors import UserError

REACH_SECONDS = 5.0  # a tracking server that takes no connection in this long is not there
MLMODEL_FILE = "MLmodel"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_PARAM_NAME_REFUSED = re.compile(r"[^/\w.\- ]")


def check_reachable(uri: str) -> None:
    """Before any work: a tracking server (``http(s)://``) takes a connection within
    ``REACH_SECONDS``; MLflow itself would retry for minutes before failing."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        socket.create_connection((parsed.hostname, port), timeout=REACH_SECONDS).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise UserError(f"MLflow tracking server {parsed.scheme}://{parsed.hostname}"
                        f"{':' + str(parsed.port) if parsed.port else ''} cannot be reached ({reason}): "
                        "start it, or set MLFLOW_TRACKING_URI to another store") from None


def full_disk(exc: BaseException, uri: str, store: Path | None) -> str | None:
    """The one line for a failure on a full disk (``ENOSPC``, or SQLite's "database or disk is
    full" however MLflow wraps it), naming the disk of the store ``store`` (a SQLite file, else
    the working folder's); None for any other failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS) or "disk is full" in str(exc):
            folder = Path(store).resolve().parent if store is not None else Path.cwd()
            mount = folder
            while not os.path.ismount(mount) and mount != mount.parent:
                mount = mount.parent
            where = getattr(exc, "filename", None) or folder
            return f"disk full: no space left on {mount} (writing {where}; the MLflow store {uri})"
        exc = exc.__cause__ or exc.__context__
    return None


def param_name(key: str) -> str:
    """``key`` as a name MLflow takes for a parameter: a character it refuses (quotes, brackets,
    a feature named ``Area (total)`` in ``[features.sums]``) as ``_``, and no ``..`` or ``//``
    path that would resolve to another name."""
    name = _PARAM_NAME_REFUSED.sub("_", str(key))
    return name if posixpath.normpath(name) == name else name.replace("/", "_")


def end_failed(end_run, exc: BaseException, uri: str, store: Path | None) -> None:
    """``end_run("FAILED")`` for a run that raised ``exc``; on a full disk, one line naming it
    (a :class:`UserError` from ``exc``), the store closing the run FAILED if it still can."""
    full = full_disk(exc, uri, store)
    if full is None:
        end_run("FAILED")
        return
    try:
        end_run("FAILED")
        closed = "closed FAILED"
    except Exception:  # the store took no status either: the next run closes it (KILLED)
        closed = "left for the next run to close"
    raise UserError(f"{full}: the run is {closed}; free space there and run again") from exc


def local_folder(uri: str) -> Path | None:
    """The folder of a model given by path (``DIR`` or ``file:///DIR``); None for a store's URI."""
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri or uri.startswith(("models:", "runs:")) else Path(uri)


def check_model_folder(uri: str) -> None:
    """A model given by path: its folder holds an ``MLmodel`` file (YAML, read safely) of a pyfunc
    model this pipeline logged, whose metadata names a competition. Nothing is unpickled here:
    loading a model runs its code, so this comes first. Other URIs: nothing to check."""
    folder = local_folder(uri)
    if folder is None:
        return
    mlmodel = folder / MLMODEL_FILE
    if not mlmodel.is_file():
        raise UserError(f"no model at {uri}: {mlmodel} is missing (an MLflow model folder holds one)")
    try:
        described = yaml.safe_load(mlmodel.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{mlmodel}: not an MLflow model file ({type(exc).__name__})") from None
    described = described if isinstance(described, dict) else {}
    flavors, metadata = described.get("flavors"), described.get("metadata")
    if not isinstance(flavors, dict) or "python_function" not in flavors \
            or not isinstance(metadata, dict) or "competition" not in metadata:
        raise UserError(f"{uri} was not logged by this pipeline: its {MLMODEL_FILE} names no competition "
                        "(nothing in it was loaded)")
