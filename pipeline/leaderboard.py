"""Leaderboard scores back in the runs: does the CV track the public leaderboard?

An upload carries its run's id in the submission's description (``... (run <id>)``), so a run and
its submission find each other in ``kaggle competitions submissions`` whoever uploaded it. After
an upload the run gets the submission's reference (tag ``kaggle.submission``) and, once Kaggle has
scored it, ``public_<metric>`` (and ``private_<metric>`` when the competition shows one).
``python -m pipeline leaderboard`` syncs the scores of earlier submissions, prints the runs' CV
with its spread beside the public score, and the Spearman rank correlation of the two: the
question is whether the CV orders the runs as the leaderboard does, not whether the values agree
(a public split scores a little differently from the folds, for every run alike).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import spearmanr

from models.time_limit import TimeLimit
from pipeline import config, kaggle_api, plots, tracking
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.kaggle_api import Submission

SUBMISSION_TAG = "kaggle.submission"
COMPETITION_TAG = "kaggle.competition"
# Kaggle scores a tabular submission in seconds to a few minutes; asking every 10 s stays far
# below its rate limit.
POLL_SECONDS = 10.0
# How long `submit --upload` waits for the public score (--wait) before leaving it to `leaderboard`.
DEFAULT_WAIT = 300.0


def run_marker(run_id: str) -> str:
    return f"(run {run_id})"


def upload_message(message: str, run_id: str) -> str:
    """The submission's description: the user's message and the run it came from."""
    return f"{message} {run_marker(run_id)}"


def _of_run(listing: list[Submission], run_id: str) -> Submission | None:
    return next((s for s in listing if run_marker(run_id) in s.description), None)


def record(run_id: str, competition: str, submission: Submission, metric: str) -> None:
    """The submission's reference on the run; its scores too, once it has them."""
    scores = {f"public_{metric}": submission.public, f"private_{metric}": submission.private}
    tracking.update_run(run_id, tags={SUBMISSION_TAG: submission.ref, COMPETITION_TAG: competition},
                        metrics={k: v for k, v in scores.items() if v is not None})


def follow(competition: str, run_id: str, metric: str, time_limit: TimeLimit | None, *,
           interval: float | None = None, sleep: Callable[[float], None] = time.sleep) -> Submission | None:
    """Ask Kaggle for the run's submission until it is scored or ``time_limit`` is over (None: ask
    once); the reference and scores go on the run. Returns the submission (None: not listed)."""
    interval = POLL_SECONDS if interval is None else interval
    found = None
    while True:
        try:
            found = _of_run(kaggle_api.submissions(competition), run_id) or found
        except UserError as exc:  # the upload itself went through: say so, and leave the rest to `leaderboard`
            say(f"leaderboard: {exc}; `python -m pipeline leaderboard -c {competition}` fetches the score later")
            return found
        if found is not None:
            record(run_id, competition, found, metric)
            if found.scored:
                say(f"public {metric}: {found.public:.5f}"
                    + (f", private {found.private:.5f}" if found.private is not None else "")
                    + f" (submission {found.ref})")
                return found
            if found.status == "error":
                say(f"Kaggle could not score submission {found.ref}: see its page on kaggle.com")
                return found
        if time_limit is None or time_limit.left() <= 0:
            break
        sleep(min(interval, time_limit.left()))
    later = f"`python -m pipeline leaderboard -c {competition}` fetches its score later"
    if found is None:
        say(f"leaderboard: the submission is not listed yet; {later}")
    else:
        waited = f"not scored after {time_limit.seconds:.0f} s" if time_limit else "recorded on the run"
        say(f"leaderboard: submission {found.ref} {waited}; {later}")
    return found


def link(experiment: str, competition: str, run_id: str, ref: str) -> None:
    """``--run RUN --submission REF``: a submission made by hand, tied to a run of this competition."""
    run = next((r for r in tracking.finished_runs(experiment) if r.info.run_id.startswith(run_id)), None)
    if run is None:
        raise UserError(f"--run {run_id}: no finished run of {experiment!r} has that id")
    listing = kaggle_api.submissions(competition)
    submission = next((s for s in listing if s.ref == ref), None)
    if submission is None:
        raise UserError(f"--submission {ref}: not among your submissions to {competition} "
                        f"(refs: {', '.join(s.ref for s in listing[:5]) or 'none'})")
    record(run.info.run_id, competition, submission, _metric(run))


def _metric(run) -> str:
    return run.data.params.get("metric", "score")


def sync(experiment: str, competition: str) -> int:
    """Scores of earlier submissions onto their runs (by recorded reference, else by the run id in
    the description). Returns how many runs got a score."""
    listing = kaggle_api.submissions(competition)
    by_ref = {s.ref: s for s in listing}
    updated = 0
    for run in tracking.finished_runs(experiment):
        ref = run.data.tags.get(SUBMISSION_TAG)
        submission = by_ref.get(ref) if ref else _of_run(listing, run.info.run_id)
        if submission is not None:
            record(run.info.run_id, competition, submission, _metric(run))
            updated += submission.scored
    return updated


@dataclass(frozen=True)
class Row:
    run_id: str
    name: str
    cv: float
    spread: float | None
    spread_of: str  # "repeats" or "folds"
    public: float | None
    private: float | None

    @property
    def difference(self) -> float | None:
        return None if self.public is None else self.public - self.cv


def rows(experiment: str) -> list[Row]:
    """The experiment's runs that have a CV score, newest first (leaderboard runs left out)."""
    found = []
    for run in tracking.finished_runs(experiment):
        metric, values = _metric(run), run.data.metrics
        if run.data.tags.get("stage") == "leaderboard" or f"cv_{metric}" not in values:
            continue
        repeats = values.get(f"cv_{metric}_repeats_std")
        spread, of = (repeats, "repeats") if repeats is not None else (values.get(f"cv_{metric}_std"), "folds")
        found.append(Row(run.info.run_id, run.info.run_name or "", values[f"cv_{metric}"], spread, of,
                         values.get(f"public_{metric}"), values.get(f"private_{metric}")))
    return found


def rank_correlation(table: list[Row]) -> float | None:
    """Spearman's rho of CV against public score over the runs that have both; None under 3 runs
    or when either side is constant."""
    pairs = [(row.cv, row.public) for row in table if row.public is not None]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return None
    rho = float(spearmanr(*zip(*pairs, strict=True)).statistic)
    return None if math.isnan(rho) else rho


def _number(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.5f}" + (f" ± {spread:.5f}" if spread is not None else "")


def format_table(table: list[Row], metric: str) -> list[str]:
    """One line a run; a private column once the competition shows private scores."""
    private = any(row.private is not None for row in table)
    header = (f"{'run':<10} {'name':<28} {'cv ' + metric + ' ± spread':<28} {'public':>9} {'public-cv':>10}"
              + (f" {'private':>9}" if private else ""))
    lines = [header, "-" * len(header)]
    for row in table:
        spread = _number(row.cv, row.spread) + (" (r)" if row.spread_of == "repeats" else "")
        difference = "-" if row.difference is None else f"{row.difference:+.5f}"
        lines.append(f"{row.run_id[:8]:<10} {row.name[:28]:<28} {spread:<28} {_number(row.public):>9} {difference:>10}"
                     + (f" {_number(row.private):>9}" if private else ""))
    return lines


def report(experiment: str, competition: str, *, run_id: str | None = None, ref: str | None = None) -> float | None:
    """``python -m pipeline leaderboard``: link, sync, print the table and the rank correlation,
    and log the CV-against-public plot to a ``leaderboard`` run. Returns Spearman's rho."""
    if run_id or ref:
        if not (run_id and ref):
            raise UserError("--run and --submission go together: the run, and the submission to link to it")
        link(experiment, competition, run_id, ref)
    updated = sync(experiment, competition)
    table = rows(experiment)
    if not table:
        raise UserError(f"no finished run of {experiment!r} has a CV score yet: run `make submit` first")
    metric = _metric(next(r for r in tracking.finished_runs(experiment) if r.info.run_id == table[0].run_id))
    say(f"leaderboard: {updated} run(s) with a public score from {competition}")
    for line in format_table(table, metric):
        print(line)
    rho = rank_correlation(table)
    scored = [row for row in table if row.public is not None]
    print(f"Spearman rank correlation of cv and public {metric} over {len(scored)} runs: "
          + ("n/a (needs 3 runs with different scores)" if rho is None else f"{rho:+.3f}"))
    if scored:
        figure = plots.cv_vs_public([r.cv for r in scored], [r.public for r in scored],
                                    [f"{r.run_id[:8]} {r.name}" for r in scored], metric, rho=rho)
        with tracking.run(experiment, "leaderboard", tags={"stage": "leaderboard", COMPETITION_TAG: competition}):
            tracking.log_figure(figure, "cv_vs_public.png")
            tracking.log_metrics({"leaderboard_runs": len(scored), **({"cv_public_spearman": rho} if rho is not None
                                                                     else {})})
    return rho


def experiment_and_slug(competition: str | None, data_dir: Path | None) -> tuple[str, str]:
    """The MLflow experiment (the competition's name) and its Kaggle slug: the config's ``kaggle``
    field where there is a config, else the name itself."""
    name = config.competition_name(competition, data_dir=data_dir)
    if name not in config.available():
        return name, name
    comp = config.load(name)
    if not comp.kaggle or "/" in comp.kaggle:
        raise UserError(f"competition {name!r} has no Kaggle competition to read a leaderboard from")
    return comp.name, comp.kaggle


def add_parser(stages) -> None:
    board = stages.add_parser("leaderboard", help="sync public scores of uploads; CV against the leaderboard")
    board.add_argument("--competition", "-c", default=os.environ.get("COMPETITION") or None,
                       help="a config's name or a Kaggle slug (default: the --data-dir folder's name)")
    board.add_argument("--data-dir", type=Path, help="only to name the competition by its folder")
    board.add_argument("--run", dest="run_id", help="link this run (an id or its first characters) ...")
    board.add_argument("--submission", dest="ref", help="... to this submission (its ref, from "
                                                        "`kaggle competitions submissions`)")


def _stage_leaderboard(args) -> None:
    experiment, slug = experiment_and_slug(args.competition, args.data_dir)
    report(experiment, slug, run_id=args.run_id, ref=args.ref)


STAGES = {"leaderboard": _stage_leaderboard}
