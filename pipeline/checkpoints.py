"""Where a run keeps its training checkpoints: ``.checkpoints/<competition>/<config hash>/``.

The hash covers everything that decides what training does: the model and its resolved
params, the validation scheme, a fingerprint of the training data, the number of processes and
the device type (``config.json`` in the folder shows it). A run whose folder already exists
continues from its files (``--resume``, the default: ``models.training.fit`` picks up each fit
where it stopped, and a finished fit is not trained again); ``--no-resume`` empties it first.
When the run is over, its last checkpoint goes to MLflow (``checkpoints/``) and the folder is
removed. Only rank 0 (``torchrun``) touches the files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from models import distributed
from pipeline import tracking
from pipeline.console import say

ROOT = Path(".checkpoints")


def fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def folder_for(competition: str, config: dict[str, Any]) -> Path:
    text = json.dumps(config, sort_keys=True, default=str)
    return ROOT / competition / hashlib.sha256(text.encode()).hexdigest()[:16]


def open_folder(competition: str, config: dict[str, Any], *, resume: bool) -> Path:
    """The run's checkpoint folder: kept when ``resume`` (and said so), else emptied."""
    folder = folder_for(competition, config)
    if distributed.is_main():
        found = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
        if found and resume:
            say(f"resuming from {folder} ({', '.join(found)})")
        elif found:
            shutil.rmtree(folder)
            say(f"--no-resume: removed the checkpoints in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    return folder


def close_folder(folder: Path, last: str) -> None:
    """Log ``folder/last`` to the active run as ``checkpoints/<last>``, then remove the folder."""
    if not distributed.is_main():
        return
    final = folder / last
    if final.is_file():
        tracking.log_artifact_under(final, "checkpoints")
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, ROOT):  # and the folders above it, once empty
        try:
            parent.rmdir()
        except OSError:
            break
