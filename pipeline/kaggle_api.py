"""The only door to Kaggle: download competition files and upload submissions.

``import kaggle`` authenticates at import time and can exit the process when no credentials are
found, so we never import it: we run its command-line client in a subprocess. That keeps a
missing key from killing the pipeline, and gives tests one clean boundary to fake (``KAGGLE_CLI``).
Credentials are read by that client alone; nothing here prints or logs them.

The client's failures become one line each (:func:`explain`): no such competition (404), rules
not accepted (403), credentials missing or refused (401), rate-limited (429).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
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


def explain(output: str, competition: str) -> str | None:
    """The one line for a failure the client reported in ``output``; None: not one we know."""
    status = re.search(r"\b(401|403|404|429)\b", output)
    if "kaggle.json" in output or "KAGGLE_USERNAME" in output or (status and status[1] == "401"):
        return ("Kaggle refused the credentials or found none (401): set KAGGLE_USERNAME/KAGGLE_KEY "
                "(or ~/.kaggle/kaggle.json)")
    if status is None:
        return None
    return {
        "403": f"Kaggle refused access to {competition!r} (403): accept its rules at "
               f"https://www.kaggle.com/competitions/{competition}/rules",
        "404": f"no Kaggle competition {competition!r} (404; the slug is in its address: "
               "kaggle.com/competitions/<slug>)",
        "429": "Kaggle rate-limited this client (429): wait a few minutes and try again",
    }[status[1]]


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def check_slug(slug: str) -> str:
    """A Kaggle competition slug (``titanic``) or dataset (``owner/name``): letters, digits, ``-``,
    ``_`` and ``.``, never ``..``, a leading ``-`` or ``/``. Such a name is the folder
    ``data/<slug>`` too, which so stays inside ``data/``, and never reads as an option."""
    if not _SLUG.fullmatch(slug) or ".." in slug:
        raise UserError(f"{slug!r} is no Kaggle slug (letters, digits, '-', '_' and '.', as in "
                        "kaggle.com/competitions/<slug>, or <owner>/<dataset>)")
    return slug


def _run(args: list[str], what: str, competition: str, timeout: float = 3600) -> str:
    """The client's standard output; a failure is one :class:`UserError` line. User values come
    after ``--`` or as ``--option=value``: none of them can read as an option of the client."""
    try:
        done = subprocess.run([_client(), *args], capture_output=True, text=True, timeout=timeout)
    except OSError as exc:
        raise UserError(f"{what} failed: cannot run the kaggle client ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{what} failed: the kaggle client gave no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        output = f"{done.stderr}\n{done.stdout}"
        known = explain(output, competition)
        if known:
            raise UserError(f"{what} failed: {known}")
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"{what} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done.stdout


def download(competition: str, dest: Path) -> list[str]:
    """Download and unzip every file of ``competition`` into ``dest``; returns the file names.

    An ``owner/name`` slug is a Kaggle dataset (Fashion-MNIST is one), not a competition.
    """
    check_slug(competition)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staging = Path(tmp).resolve()
        kind = "datasets" if "/" in competition else "competitions"
        command = [kind, "download", "-p", str(staging), "-q", "--", competition]
        _run(command, "Kaggle download", competition)
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
    _run(["competitions", "submit", "-f", str(Path(path).resolve()), f"--message={message}", "--",
          check_slug(competition)], "Kaggle upload", competition)


@dataclass(frozen=True)
class Submission:
    """One row of ``kaggle competitions submissions``: scores are None until Kaggle has them."""

    ref: str
    file_name: str
    date: str
    description: str
    status: str  # pending, complete or error
    public: float | None
    private: float | None

    @property
    def scored(self) -> bool:
        return self.status == "complete" and self.public is not None


def _score(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_submissions(text: str) -> list[Submission]:
    """The client's ``--csv`` listing, newest first; older clients have no ``ref`` column, so a
    submission is then known by its date and file name."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("ref,", "fileName,"))), None)
    if start is None:
        return []
    found = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        status = (row.get("status") or "").rsplit(".", 1)[-1].strip().lower()  # SubmissionStatus.COMPLETE
        ref = row.get("ref") or f"{row.get('date', '')} {row.get('fileName', '')}".strip()
        found.append(Submission(ref, row.get("fileName", ""), row.get("date", ""), row.get("description", ""),
                                status, _score(row.get("publicScore")), _score(row.get("privateScore"))))
    return found


def submissions(competition: str) -> list[Submission]:
    """This account's submissions to ``competition``, newest first: the client's first page (the
    newest 20 with kaggle 2.x)."""
    listing = _run(["competitions", "submissions", "--csv", "--", check_slug(competition)],
                   "Kaggle submission list", competition, timeout=120)
    return parse_submissions(listing)


def check_upload(competition: str | None, name: str) -> None:
    """Before any work: an upload that cannot happen is refused up front."""
    if not competition:
        raise UserError(f"competition {name!r} has no Kaggle id to upload to")
    if "/" in competition:
        raise UserError(f"{competition} is a Kaggle dataset, not a competition: there is nothing to upload to")
    if not has_credentials():
        raise UserError("no Kaggle credentials found: set KAGGLE_USERNAME/KAGGLE_KEY to upload")
    _client()  # installed
