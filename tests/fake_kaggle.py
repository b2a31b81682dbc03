"""A fake ``kaggle`` command-line client that keeps a leaderboard: the tests' stand-in for Kaggle.

:func:`install` writes an executable ``kaggle`` into a folder and points ``KAGGLE_CLI`` at it. It
answers ``competitions download``, ``competitions submit`` and ``competitions submissions --csv``
the way kaggle 2.x does, and scores each uploaded file against held-back labels: the public score
on half of the test rows (every other id), the private one on the other half once
``private=True``. A submission stays pending for ``delay`` listings of the submissions, so a
test sees polling without any wall-clock wait. Failures come as the real client words them:
a missing ``kaggle.json``, ``403``/``404``/``429`` client errors.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HEADER = ["ref", "fileName", "date", "description", "status", "publicScore", "privateScore"]


@dataclass
class FakeKaggle:
    folder: Path

    def competition(self, slug: str, files: dict[str, pd.DataFrame], answers: pd.DataFrame, *,
                    metric: str = "rmse", delay: int = 1, private: bool = False) -> None:
        """Competition ``slug``: the files a download delivers, and the labels it scores against."""
        home = self.folder / "competitions" / slug
        (home / "files").mkdir(parents=True, exist_ok=True)
        for name, frame in files.items():
            frame.to_csv(home / "files" / name, index=False)
        answers.to_csv(home / "answers.csv", index=False)
        (home / "scoring.json").write_text(json.dumps({"metric": metric, "delay": delay, "private": private}))

    def delay(self, slug: str, listings: int) -> None:
        """From now on, a submission is pending for ``listings`` listings."""
        path = self.folder / "competitions" / slug / "scoring.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "delay": listings}))

    def refuse(self, slug: str) -> None:
        """Its rules not accepted: every call about it is a 403."""
        (self.folder / "competitions" / slug / "rules-not-accepted").touch()

    def rate_limit(self) -> None:
        (self.folder / "rate-limited").touch()

    @property
    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    def submissions(self, slug: str) -> list[dict]:
        path = self.folder / "submissions" / f"{slug}.json"
        return json.loads(path.read_text()) if path.is_file() else []


def install(folder: Path, monkeypatch) -> FakeKaggle:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "kaggle"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      f"import fake_kaggle\nsys.exit(fake_kaggle.main({str(folder)!r}, sys.argv[1:]))\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KAGGLE_CLI", str(script))
    return FakeKaggle(folder)


# --- the client ----------------------------------------------------------------------------------

def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _option(args: list[str], flag: str) -> str:
    given = [a for a in args if a.startswith(flag + "=")]
    return given[0].split("=", 1)[1] if given else args[args.index(flag) + 1]


def _score(metric: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    if metric == "accuracy":
        return float(np.mean(truth.astype(str) == predicted.astype(str)))
    return float(np.sqrt(np.mean((truth.astype(float) - predicted.astype(float)) ** 2)))


def _scores(home: Path, path: Path) -> tuple[float, float | None]:
    """The file's public score (even rows of the answers, by id) and private one (odd rows)."""
    scoring = json.loads((home / "scoring.json").read_text())
    answers = pd.read_csv(home / "answers.csv")
    id_column, target = answers.columns
    submitted = pd.read_csv(path)
    joined = answers.sort_values(id_column).merge(submitted, on=id_column, suffixes=("", "_submitted"))
    if len(joined) != len(answers):
        raise ValueError("ids differ from the test set's")
    truth, predicted = joined[target].to_numpy(), joined[f"{target}_submitted"].to_numpy()
    public = _score(scoring["metric"], truth[::2], predicted[::2])
    private = _score(scoring["metric"], truth[1::2], predicted[1::2]) if scoring["private"] else None
    return round(public, 5), None if private is None else round(private, 5)


def main(folder: str, args: list[str]) -> int:
    state = Path(folder)
    with open(state / "calls.jsonl", "a") as log:
        log.write(json.dumps(args) + "\n")
    if not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return _fail("Could not find kaggle.json. Make sure it's located in ~/.kaggle. "
                     "Or use the environment method.")
    if (state / "rate-limited").exists():
        return _fail("429 Client Error: Too Many Requests for url: https://www.kaggle.com/api/v1/...")
    if args[:1] != ["competitions"] or len(args) < 2:
        return _fail("usage: kaggle competitions {download,submit,submissions} ...")
    slug = args[args.index("--") + 1]  # the competition, after "--" as the client's positional
    home = state / "competitions" / slug
    if not home.is_dir():
        return _fail(f"404 Client Error: Not Found for url: https://www.kaggle.com/api/v1/competitions/{slug}")
    if (home / "rules-not-accepted").exists():
        return _fail(f"403 Client Error: Forbidden for url: https://www.kaggle.com/api/v1/competitions/{slug}")
    ledger = state / "submissions" / f"{slug}.json"
    ledger.parent.mkdir(exist_ok=True)
    entries = json.loads(ledger.read_text()) if ledger.is_file() else []
    if args[1] == "download":
        with zipfile.ZipFile(Path(_option(args, "-p")) / f"{slug}.zip", "w") as zipped:
            for path in sorted((home / "files").iterdir()):
                zipped.write(path, path.name)
    elif args[1] == "submit":
        path = Path(_option(args, "-f"))
        try:
            public, private = _scores(home, path)
            status = "COMPLETE"
        except (OSError, ValueError, KeyError):
            public, private, status = None, None, "ERROR"
        entries.insert(0, {"ref": str(50_000_000 + len(entries)), "fileName": path.name,
                           "date": f"2026-12-01 12:00:{len(entries):02d}", "description": _option(args, "--message"),
                           "status": status, "publicScore": public, "privateScore": private,
                           "listings_left": json.loads((home / "scoring.json").read_text())["delay"]})
        print(f"Successfully submitted to {slug}")
    elif args[1] == "submissions":
        writer = csv.writer(sys.stdout)
        writer.writerow(HEADER)
        for entry in entries:
            pending = entry["listings_left"] > 0
            entry["listings_left"] = max(0, entry["listings_left"] - 1)
            shown = "PENDING" if pending else entry["status"]
            writer.writerow([entry["ref"], entry["fileName"], entry["date"], entry["description"],
                             f"SubmissionStatus.{shown}", "" if pending or entry["publicScore"] is None
                             else entry["publicScore"], "" if pending or entry["privateScore"] is None
                             else entry["privateScore"]])
    else:
        return _fail(f"kaggle competitions: unknown command {args[1]!r}")
    ledger.write_text(json.dumps(entries))
    return 0
