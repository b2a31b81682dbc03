"""The train and submit stages: one loop over a :class:`~pipeline.tasks.Task`, whatever its kind.

Check the upload can happen -> load and check the files -> plan the model and its params ->
cross-validate (one MLflow run) -> refit on every training row -> predict the test set ->
check and write the submission atomically -> score it on held-back labels where there are any
-> upload.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from models import distributed
from models.time_limit import TimeLimit
from pipeline import (
    kaggle_api,
    leaderboard,
    model_board,
    models_io,
    processes,
    store_checks,
    tracking,
)
from pipeline.config import Competition
from pipeline.console import say
from pipeline.data import sources, tabular
from pipeline.data.files import SOURCE_FILE, staged
from pipeline.errors import UserError
from pipeline.outputs import check_output
from pipeline.tasks import executor, for_competition


@dataclass
class Outcome:
    model: str
    params: dict
    metric: str
    cv_score: float
    fold_scores: list[float]
    run_id: str
    scores: dict[str, float] = field(default_factory=dict)  # every model's CV score, an ensemble's too
    scores_with_outliers: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] | None = None
    submission: Path | None = None
    local_score: float | None = None
    model_version: str | None = None  # its version of the registered model named after the competition
    public_score: float | None = None  # the Kaggle public leaderboard's, when --upload waited for it


def default_data_dir(name: str) -> Path:
    """``data/<name>``, which must stay inside ``data/`` (no ``..``, no absolute name)."""
    folder = Path("data") / name
    if not folder.resolve().is_relative_to(Path("data").resolve()) or folder.resolve() == Path("data").resolve():
        raise UserError(f"competition {name!r}: its data folder {folder} is not inside data/ "
                        "(give a plain name, or the folder as --data-dir)")
    return folder


def filled_data_dir(comp: Competition, data_dir: Path | None) -> Path:
    """``data_dir``, or the default ``data/<competition>``, filled first when it has no files."""
    if data_dir is not None:
        return Path(data_dir)
    default = default_data_dir(comp.name)
    if not for_competition(comp).has_files(default):
        say(f"data: {default} is empty, filling it first")
        if distributed.is_main():  # under torchrun, one rank writes and the others wait for it
            sources.fill(comp, default)
        distributed.barrier()
    return default


def data_files(comp: Competition, data_dir: Path) -> list[Path]:
    """What a run reads, or a data folder holds, at the top of ``data_dir``: never an output."""
    names = (comp.train_file, comp.test_file, comp.sample_submission_file, tabular.LABELS_FILE, SOURCE_FILE)
    return [Path(data_dir) / name for name in names]


def run(
    comp: Competition,
    data_dir: Path,
    *,
    model: str | None = None,
    params: dict | None = None,
    output: Path | None = None,
    upload_message: str | None = None,
    score_wait: float = 0.0,
    drop_shifted: int = 0,
    progress: bool | None = None,
    tuned: bool = True,
    resume: bool = True,
    register: bool | None = None,
    time_limit: TimeLimit | None = None,
    config_file: Path | None = None,
) -> Outcome:
    """Cross-validate, refit on all rows and, when ``output`` is given, write the submission.

    With ``tuned``, a model's parameters start from its Optuna study's best trial, when one exists.
    With ``resume``, training continues from the checkpoints a killed run of the same config left.
    Under ``torchrun`` every rank trains (each its share); rank 0 alone logs, predicts and writes.
    With ``register`` (default: when there is an ``output``), the run's logged model becomes a new
    version of the registered model named after the competition (``models_io.register``).
    ``time_limit``: the run's clock, made at start-up (default: the config's ``time_limit``, from now).
    The submission replaces an earlier one last, once everything that can fail has run.
    After an upload, the run gets its submission's reference and, within ``score_wait`` seconds,
    its public score (``pipeline.leaderboard``). ``drop_shifted`` (K): the K columns that most tell
    the test set from the training set leave both (``pipeline.shift``).
    """
    time_limit = time_limit or TimeLimit(comp.time_limit)
    store_checks.check_reachable(tracking.tracking_uri())
    if comp.cv.cluster:
        executor.cluster(comp.cv.cluster)  # a scheduler that does not answer fails now, not after the data is read
    uploading = upload_message is not None and output is not None
    if uploading:
        kaggle_api.check_upload(comp.kaggle, comp.name)
    if output is not None:
        check_output(Path(output), [config_file, *data_files(comp, data_dir)], [data_dir])
    registering = register if register is not None else output is not None  # submit registers by default
    if registering:
        models_io.registered_name(comp.name)  # a name MLflow refuses fails now, not after the training
    task = for_competition(comp)
    if distributed.world_size() > 1 and not task.distributed:
        raise UserError(f"{comp.name}: only image competitions run on several processes (NPROC=1 here)")
    data = task.load(data_dir)
    plan = task.plan(data, model=model, cli_params=params or {}, tuned=tuned, time_limit=time_limit, resume=resume,
                     drop_shifted=drop_shifted)
    for line in task.describe(data, plan):
        say(line)

    stage = "submit" if output else "train"
    tags = {"competition": comp.name, "data_source": data.source, "git_commit": processes.git_commit(),
            "model": plan.model, "stage": stage, **task.tags(data, plan)}
    with tracking.run(comp.name, f"{stage}-{plan.model}", tags=tags) as active:
        tracking.log_params({**comp.as_params(), **task.run_params(data, plan)})
        data = task.check_shift(data, plan)  # train-vs-test shift (pipeline/shift.py); images: nothing
        result = task.validate(data, plan, progress=progress)
        fitted = task.refit(data, plan, result, progress=progress)
        outcome = Outcome(plan.model, plan.params, plan.metric.name, result.score, result.fold_scores,
                          active.info.run_id, result.scores, result.scores_with_outliers, result.weights)
        if not distributed.is_main():  # the other ranks only train
            return outcome
        predictions = task.predict(fitted, data, plan)
        with staged(output) as written:  # the new submission, moved onto `output` last
            if output is not None:
                rows = task.submission(data, plan, predictions, written)
                outcome.submission = Path(output)
                tracking.log_artifact(written)
            outcome.local_score = task.local_score(data, plan, predictions)
            if outcome.local_score is not None:
                tracking.log_metrics({f"local_test_{plan.metric.name}": outcome.local_score})
            if registering:  # what the CV ran: the plan's split, the folds and rows of the result
                coverage = models_io.Coverage.of(plan.comp, result)
                outcome.model_version = models_io.register(plan.comp, active.info.run_id, plan.metric, result.score,
                                                           coverage)
            tracking.log_metrics({"wall_seconds": time_limit.elapsed()})
            if output is not None:
                os.replace(written, output)
                say(f"submission: {output} ({rows} rows)")
        say(f"mlflow run {active.info.run_id} in {tracking.tracking_uri()} (make ui to browse)")
    if result.leaderboard is not None:  # the run's last lines: every model side by side
        model_board.show(result.leaderboard, plan.metric.name)

    if uploading:
        kaggle_api.upload(Path(output), comp.kaggle, leaderboard.upload_message(upload_message, outcome.run_id))
        say(f"uploaded {output} to {comp.kaggle}")
        wait = TimeLimit(score_wait, reserve=0.0) if score_wait > 0 else None
        scored = leaderboard.follow(comp.kaggle, outcome.run_id, plan.metric.name, wait)
        outcome.public_score = scored.public if scored is not None else None
    return outcome
