"""The model leaderboard of one run: every configuration the run tried, as AutoGluon's
``leaderboard()`` shows them (not ``pipeline.leaderboard``, the Kaggle public leaderboard's sync).

One row per configuration, whether it finished, was skipped or dropped (with the reason), and one
for the final model: its cross-validated score and the spread of its fold scores, the seconds its
fits took, the seconds its fold models take to predict 1,000 rows, its weight in the ensemble, its
bags and seeds. Printed at the end of a run, logged as ``leaderboard.csv``; ``python -m pipeline
model-board RUN`` prints it again from the run's artifact.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import tracking
from pipeline.console import say
from pipeline.errors import UserError

ARTIFACT = "leaderboard.csv"
DECIMALS = {"cv_score": 6, "cv_std": 6, "fit_seconds": 2, "predict_seconds_per_1k": 4, "weight": 4}  # readable in the UI
COLUMNS = ("model", "status", "cv_score", "cv_std", "fit_seconds", "predict_seconds_per_1k", "weight", "bags",
           "seeds", "reason")


@dataclass(frozen=True)
class Row:
    model: str
    status: str  # finished, final, skipped, dropped, left out
    cv_score: float = math.nan
    cv_std: float = math.nan
    fit_seconds: float = math.nan
    predict_seconds_per_1k: float = math.nan
    weight: float = math.nan
    bags: int | None = None
    seeds: str = ""
    reason: str = ""


def finished_row(name: str, score: float, fold_scores: Sequence[float], fit_seconds: float,
                 predict_seconds: float, predicted_rows: int, *, weight: float = math.nan, bags: int | None = 1,
                 seeds: Sequence[int] = (), status: str = "finished") -> Row:
    """A model that ran: ``predict_seconds`` for ``predicted_rows`` rows become seconds per 1,000."""
    per_1k = predict_seconds / predicted_rows * 1000 if predicted_rows else math.nan
    spread = float(pd.Series(list(fold_scores), dtype=float).std(ddof=0)) if len(fold_scores) else math.nan
    return Row(name, status, float(score), spread, float(fit_seconds), per_1k, weight, bags,
               " ".join(map(str, seeds)))


def table(rows: Sequence[Row], *, greater_is_better: bool) -> pd.DataFrame:
    """The rows as a frame: the final model first, then the others that ran, best first, then the
    ones that did not run in the order they came."""
    ran = sorted((r for r in rows if r.status == "finished"), key=lambda r: -r.cv_score if greater_is_better else r.cv_score)
    ordered = [*(r for r in rows if r.status == "final"), *ran,
               *(r for r in rows if r.status not in ("final", "finished"))]
    frame = pd.DataFrame([r.__dict__ for r in ordered], columns=list(COLUMNS))
    frame["bags"] = frame["bags"].astype("Int64")
    return frame.round(DECIMALS)


def with_final(frame: pd.DataFrame, final: Row) -> pd.DataFrame:
    """``frame`` with ``final`` on top (an image run's refit)."""
    return pd.concat([table([final], greater_is_better=True), frame], ignore_index=True)


def from_portfolio(outcome, weights: Mapping[str, float], test_rows: int, *, final: Row | None,
                   greater_is_better: bool, extra: Sequence[Row] = ()) -> pd.DataFrame:
    """The table of a portfolio's ``outcome`` (``pipeline.tasks.portfolio.Outcome``): its fitted
    configurations with their ensemble ``weights``, its skipped, dropped and left-out ones, and
    ``extra`` rows (the stack's)."""
    rows = [finished_row(f.config.name, f.score, f.fold_scores, f.seconds + f.bag_seconds, f.predict_seconds,
                         test_rows, weight=weights.get(f.config.name, math.nan), bags=f.bags, seeds=f.seeds)
            for f in outcome.fitted]
    ran = {f.config.name for f in outcome.fitted}
    for name, said in outcome.skipped_reasons.items():
        if name in ran:  # an extra bag dropped for time: the configuration itself finished
            continue
        status = next((s for s in ("left out", "dropped", "skipped") if said.startswith(s)), "skipped")
        reason = said.removeprefix(status).strip()
        rows.append(Row(name, status, reason=reason[1:-1] if reason.startswith("(") else reason))
    return table([*([final] if final else []), *extra, *rows], greater_is_better=greater_is_better)


def render(frame: pd.DataFrame, metric: str) -> str:
    """The table as text for the console: numbers rounded and right-aligned, words left-aligned,
    empty cells blank."""
    headers = {"model": "model", "status": "status", "cv_score": f"cv {metric}", "cv_std": "± folds",
               "fit_seconds": "fit s", "predict_seconds_per_1k": "predict s/1k", "weight": "weight", "bags": "bags",
               "seeds": "seeds", "reason": "reason"}
    formats = {"cv_score": "{:.5f}", "cv_std": "{:.5f}", "fit_seconds": "{:.1f}", "predict_seconds_per_1k": "{:.3f}",
               "weight": "{:.3f}", "bags": "{}"}
    cells = {column: [headers[column], *("" if pd.isna(v) else formats.get(column, "{}").format(v)
                                         for v in frame[column])] for column in COLUMNS}
    words = ("model", "status", "seeds", "reason")
    widths = {column: max(map(len, values)) for column, values in cells.items()}
    lines = []
    for row in range(len(frame) + 1):
        parts = [cells[c][row].ljust(widths[c]) if c in words else cells[c][row].rjust(widths[c]) for c in COLUMNS]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def show(frame: pd.DataFrame, metric: str) -> None:
    """The table on the console, under a title line."""
    say(f"leaderboard ({metric}):")
    for line in render(frame, metric).splitlines():
        say(f"  {line}")


def of_run(run_id: str) -> pd.DataFrame:
    """The ``leaderboard.csv`` a finished run logged."""
    tracking.run_params(run_id)  # no such run: says so
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download_artifact(run_id, ARTIFACT, Path(tmp))
        if path is None:
            raise UserError(f"run {run_id}: no {ARTIFACT} (a tabular train or submit run logs one)")
        frame = pd.read_csv(path)
    frame["bags"] = frame["bags"].astype("Int64")
    frame[["seeds", "reason"]] = frame[["seeds", "reason"]].fillna("")
    return frame


def add_parser(stages) -> None:
    board = stages.add_parser("model-board", help="print the model leaderboard of a finished run (its leaderboard.csv)")
    board.add_argument("run_id", metavar="RUN", help="the run's id (the last line of train and submit prints it)")


def _stage_model_board(args) -> None:
    frame = of_run(args.run_id)
    metric = tracking.run_params(args.run_id).get("metric", "score")
    print(render(frame, metric))


STAGES = {"model-board": _stage_model_board}
