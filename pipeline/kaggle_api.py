"""The only door to Kaggle: download competition files and upload submissions.

``import kaggle`` authenticates at import time and can exit the process when no credentials are
found, so we never import it: we run its command-line client in a subprocess. That keeps a
missing key from killing the pipeline, and gives tests one clean boundary to fake (``KAGGLE_CLI``).
Credentials are read by that client alone; nothing here prints or logs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline.errors import UserError


def _config_dirs() -> list[Path]:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    home = Path.home()
    return [home / ".kaggle", home / ".config" / "kaggle"]


def has_credentials() -> bool:
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    return any(
        (folder / name).is_file() for folder in _config_dirs() for name in ("kaggle.json", "access_token")
    )


def _client() -> str:
    if os.environ.get("KAGGLE_CLI"):
        return os.environ["KAGGLE_CLI"]
    beside_python = Path(sys.executable).parent / "kaggle"
    found = str(beside_python) if beside_python.exists() else shutil.which("kaggle")
    if not found:
        raise UserError("the kaggle command-line client is not installed (pip install kaggle)")
    return found


def _run(args: list[str], what: str) -> None:
    try:
        done = subprocess.run([_client(), *args], capture_output=True, text=True, timeout=3600)
    except OSError as exc:
        raise UserError(f"{what} failed: cannot run the kaggle client ({exc.strerror})") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"{what} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")


def download(competition: str, dest: Path) -> list[str]:
    """Download and unzip every file of ``competition`` into ``dest``; returns the file names.

    An ``owner/name`` slug is a Kaggle dataset (Fashion-MNIST is one), not a competition.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staging = Path(tmp)
        if "/" in competition:
            command = ["datasets", "download", competition, "-p", str(staging), "-q"]
        else:
            command = ["competitions", "download", "-c", competition, "-p", str(staging), "-q"]
        _run(command, "Kaggle download")
        for archive in staging.glob("*.zip"):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(staging)
            archive.unlink()
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        if not names:
            raise UserError(f"Kaggle download of {competition!r} gave no files")
        for name in names:
            os.replace(staging / name, dest / name)
    return names


def upload(path: Path, competition: str, message: str) -> None:
    _run(["competitions", "submit", "-c", competition, "-f", str(path), "-m", message], "Kaggle upload")


def check_upload(competition: str | None, name: str) -> None:
    """Before any work: an upload that cannot happen is refused up front."""
    if not competition:
        raise UserError(f"competition {name!r} has no Kaggle id to upload to")
    if "/" in competition:
        raise UserError(f"{competition} is a Kaggle dataset, not a competition: there is nothing to upload to")
    if not has_credentials():
        raise UserError("no Kaggle credentials found: set KAGGLE_USERNAME/KAGGLE_KEY to upload")
