"""``make tune``: run the study of one model until it holds ``--trials`` finished trials.

The study is checked against the task's metric (its direction and name), and a new one gets the
untuned params as its first trial (``task.untuned_params``: what ``submit`` fits untuned), so its
best trial is never worse than the defaults. Dead workers' RUNNING trials are failed, and the
parent MLflow runs of dead tune processes closed (KILLED), before any trial runs. One worker runs
in this process; ``--jobs J`` > 1 spawns J (:mod:`pipeline.tune.workers`) while this process
writes their trials to MLflow (:mod:`pipeline.tune.runs`). Summary lines are printed at the end;
``submit`` then starts from the study's best params (``pipeline.studies.best_params``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from models.time_limit import TimeLimit
from pipeline import processes, progress, store_checks, studies, tasks, tracking
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.tune import runs, workers
from pipeline.tune.objective import Objective

MIN_STUDY_SECONDS = 10.0  # a default configuration's study is not started with less time than this


@dataclass
class TuneOutcome:
    study: str
    storage: str
    metric: str
    best_value: float | None
    best_params: dict | None
    best_trial: int | None
    counts: dict[str, int]
    ran: int  # trials finished (complete or pruned) by this invocation
    wall_seconds: float
    run_id: str | None = None
    default_value: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.ran / self.wall_seconds if self.wall_seconds > 0 else 0.0


def tune(
    comp: Competition,
    data_dir: Path,
    *,
    model: str | None = None,
    n_trials: int = 50,
    time_limit: TimeLimit | None = None,
    jobs: int = 1,
    storage: str | None = None,
    seed: int = 0,
) -> TuneOutcome:
    """Run the study of ``model`` until it holds ``n_trials`` finished trials, or until
    ``time_limit`` (default: the config's ``time_limit``, from now): no trial starts after its work
    deadline, and a trial's folds end within it. The limit counts on the wall clock (``time.time``),
    which every worker shares."""
    if n_trials < 1 or jobs < 1:
        raise UserError("--trials and --jobs must be at least 1")
    time_limit = time_limit or TimeLimit.start(comp.time_limit, clock=time.time)
    store_checks.check_reachable(tracking.tracking_uri())
    task = tasks.for_competition(comp)
    data = task.load(data_dir)  # bad files fail here, once, before any worker starts
    objective = Objective(task, data, model, time_limit)
    model, metric = objective.model, objective.metric
    url, name = studies.storage_url(storage), studies.study_name(comp, objective.study_key)
    where = studies.describe_storage(url)
    study = _open_study(url, name, objective, comp)

    for run_id in tracking.close_dead_runs_of(comp.name):  # even when this tune has nothing left to run
        say(f"mlflow run {run_id} was left RUNNING by a process that is gone: marked KILLED")
    adopted = workers.fail_dead_trials(study)
    for number in adopted:
        say(f"trial {number} was left RUNNING by a worker that is gone: marked FAIL")
    is_rdb = studies.is_url(url)
    if is_rdb:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
    counts = workers.counts(study)
    remaining = n_trials - workers.finished(counts)
    say(f"study {name} in {where}: {workers.finished(counts)} finished trials "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned), {counts['FAIL']} failed, "
        f"{counts['RUNNING']} running elsewhere; target {n_trials}")
    if remaining - counts["RUNNING"] <= 0:
        say(f"nothing to run: the study already has {n_trials} finished or running trials "
            "(--trials is the study's total; raise it to run more)")
        return _outcome(study, where, metric.name, counts, 0, time_limit.elapsed())

    n_workers = max(1, min(jobs, remaining))
    say(f"running up to {remaining} trials with {n_workers} worker process{'es' if n_workers > 1 else ''}"
        + (f", time limit {time_limit.seconds:g} s" if time_limit.limited else "") + (" (RDB storage with heartbeats)" if is_rdb else ""))
    jobs_spec = [
        workers.Job(comp=comp, data_dir=Path(data_dir).resolve(), model=model, storage=url, study=name,
                    n_trials=n_trials, time_limit=time_limit, seed=seed, index=i,
                    jobs=n_workers, parent_pid=os.getpid() if n_workers > 1 else 0)
        for i in range(n_workers)
    ]
    tags = {"competition": comp.name, "model": model, "stage": "tune", "git_commit": processes.git_commit(),
            "optuna.study": name, "optuna.storage": where}
    # tracking.run closes (KILLED) the runs of dead processes first: a tune killed with -9 left its parent RUNNING.
    with tracking.run(comp.name, f"tune-{model}", tags=tags):
        run_id, experiment_id = tracking.active_run_id(), tracking.active_experiment_id()
        tracking.log_params({**comp.as_params(), "model.name": model, "task": objective.plan.task,
                             "metric": metric.name, "direction": objective.direction, "optuna.study": name,
                             "optuna.storage": where, "trials": n_trials, "jobs": n_workers,
                             "time_limit": time_limit.seconds if time_limit.limited else "none",
                             "seed": seed})
        say(f"mlflow run {run_id} in {tracking.tracking_uri()}: one child run per trial")
        children = runs.ChildRuns(experiment_id, run_id, name, metric.name, adopted)
        bar = progress.TrialsBar(remaining, time_limit, progress.enabled(None))
        try:
            if n_workers == 1:
                children.pids.add(os.getpid())
                workers.work(jobs_spec[0], objective, on_trial=lambda trial: (children.log(trial), bar.trial()))
            else:
                workers.run_workers(jobs_spec, on_start=children.pids.add,
                                    on_poll=lambda: (children.sweep(study), bar.to(children.finished)))
        finally:
            bar.close()
            workers.fail_dead_trials(study)  # a worker that died leaves no RUNNING trial behind
            children.sweep(study)
        outcome = _outcome(study, where, metric.name, workers.counts(study), children.finished,
                           time_limit.elapsed())
        outcome.run_id = run_id
        runs.log_summary(study, outcome)
    _say_summary(outcome, model)
    return outcome


def tune_default(comp: Competition, data_dir: Path, *, n_trials: int = 50, time_limit: TimeLimit | None = None,
                 **options) -> list[TuneOutcome]:
    """``make tune`` without a model: the configurations the task tunes by default (the tabular
    portfolio's ``tune`` list, its strongest members) one after another, each its own study of
    ``n_trials`` trials, in an equal share of the time left. A task whose default is one model
    tunes that model."""
    time_limit = time_limit or TimeLimit.start(comp.time_limit, clock=time.time)
    task = tasks.for_competition(comp)
    names = task.tuned_by_default(task.load(data_dir))
    if not names:
        return [tune(comp, data_dir, n_trials=n_trials, time_limit=time_limit, **options)]
    say(f"tune: the portfolio's strongest configurations in turn, each its own study: {', '.join(names)}")
    outcomes = []
    for position, name in enumerate(names):
        share = time_limit.within(time_limit.left() / (len(names) - position)) if time_limit.limited else time_limit
        if time_limit.limited and share.left() < MIN_STUDY_SECONDS:
            say(f"tune: {', '.join(names[position:])} not tuned (time limit)")
            break
        outcomes.append(tune(comp, data_dir, model=name, n_trials=n_trials, time_limit=share, **options))
    return outcomes


def _open_study(url: str, name: str, objective: Objective, comp: Competition) -> optuna.Study:
    """The study, made if new (its first trial enqueued), after checking it was made for this metric."""
    metric, direction, where = objective.metric.name, objective.direction, studies.describe_storage(url)
    study = studies.load_study(url, name, create=True, direction=direction)
    if study.direction.name.lower() != direction:
        raise UserError(f"study {name} in {where} was made to {study.direction.name.lower()}, "
                        f"but {metric} needs {direction}: use another --storage")
    tuned_for = study.user_attrs.get("metric")
    if study.metric_names != [metric]:  # optuna-dashboard's axis: the metric, not "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
    if tuned_for is None:
        study.set_user_attr("metric", metric)
        study.set_user_attr("competition", comp.name)
        study.set_user_attr("model", objective.model)
        # Params whose names the space does not use are ignored by Optuna.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # defaults outside a space's range: tried all the same
            study.enqueue_trial(objective.first_trial(), skip_if_exists=True)
    elif tuned_for != metric:
        raise UserError(f"study {name} in {where} was tuned for {tuned_for}, not {metric}: use another --storage")
    return study


def _outcome(study: optuna.Study, where: str, metric: str, counts: Counter, ran: int, wall: float) -> TuneOutcome:
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return TuneOutcome(
        study=study.study_name,
        storage=where,
        metric=metric,
        best_value=None if best is None else float(best.value),
        best_params=None if best is None else studies.model_params(best),
        best_trial=None if best is None else best.number,
        counts={state: counts[state] for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        ran=ran,
        wall_seconds=wall,
    )


def _say_summary(outcome: TuneOutcome, model: str) -> None:
    counts = outcome.counts
    say(f"study {outcome.study}: {counts['COMPLETE'] + counts['PRUNED']} finished trials "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned), {counts['FAIL']} failed; "
        f"{outcome.ran} this run in {outcome.wall_seconds:.0f} s ({outcome.trials_per_minute:.1f} trials/min)")
    if outcome.best_params is None:
        say("no complete trial yet")
        return
    params = " ".join(f"{k}={workers.short(v)}" for k, v in outcome.best_params.items())
    say(f"best cv {outcome.metric}: {outcome.best_value:.5f} (trial {outcome.best_trial}) {params}")
    say(f"make submit MODEL={model} now starts from these params (STUDY=ignore ignores them)")
    if outcome.run_id:
        say(f"mlflow run {outcome.run_id} in {tracking.tracking_uri()} (make ui to browse)")


def dashboard_command(storage: str | None = None, port: int = 8080) -> list[str]:
    """``optuna-dashboard`` on 127.0.0.1 against the same storage ``tune`` uses."""
    url = studies.storage_url(storage)
    if not studies.is_url(url) and not Path(url).is_file():
        raise UserError(f"no Optuna storage at {studies.describe_storage(url)} yet: run `make tune` first")
    beside = Path(sys.executable).parent / "optuna-dashboard"
    program = str(beside) if beside.is_file() else shutil.which("optuna-dashboard")
    if program is None:
        raise UserError("optuna-dashboard is not installed (pip install -e '.[dev]')")
    # A journal file is opened by its path (the dashboard recognises a non-SQLite file as a journal).
    return [program, url, "--host", "127.0.0.1", "--port", str(port)]

