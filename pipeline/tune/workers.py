"""Who runs the trials: the trial loop of one worker, spawned worker processes, and dead workers.

Trial budget and resume
    ``--trials N`` is the study's total of finished (COMPLETE + PRUNED) trials, not "N more": the
    same command after Ctrl-C, ``kill -9`` or a timeout runs only the remainder and keeps every
    finished trial. FAIL trials do not count. Before each trial a worker checks that finished plus
    running trials are still fewer than N; a trial that loses a race for the last slot (two
    workers asking at the same instant) ends FAIL at once with user attr ``surplus``.

Dead workers
    Every trial records its worker (``host:pid:start-time``, :func:`pipeline.processes.identity`)
    as a user attr. A RUNNING trial whose worker on this host is gone is set to FAIL before the
    next study starts (and between trials of a running one), so a ``kill -9`` leaves no trial
    RUNNING once the study is run again. ``JournalStorage`` has no heartbeat in Optuna 5 (only
    ``RDBStorage`` implements it); for an RDB storage, workers also send heartbeats and Optuna
    fails the stale trials of dead workers on other machines (``fail_stale_trials``).

Parallel workers
    ``--jobs J`` starts J processes (multiprocessing "spawn"), each with its own TPE seed (derived
    from ``--seed``, the worker index and the study's trial count, so a resumed study does not
    replay its first proposals) and its share of the cores. A worker dies with the tune process
    (``kill -9`` included), failing its running trial on the way out. Workers never touch MLflow.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from models import threads
from models.time_limit import TimeLimit
from pipeline import processes, studies, tasks
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.tune.objective import Objective

UNCLAIMED_AFTER = 120  # a RUNNING trial without a worker attr this old: its worker died at birth
FAILS_IN_A_ROW = 3  # a worker stops after this many failed trials in a row
POLL_SECONDS = 1.0
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Job:
    """What one worker needs; pickled into a spawned worker process."""

    comp: Competition
    data_dir: Path
    model: str
    storage: str
    study: str
    n_trials: int
    time_limit: TimeLimit  # the study's, on the wall clock every worker shares: no trial starts past it
    seed: int
    index: int
    jobs: int
    parent_pid: int = 0  # a spawned worker's parent; 0 in the tune process itself


class Surplus(Exception):
    """This trial would exceed the study's trial budget: another worker took the last slot."""


def counts(study: optuna.Study) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def finished(counted: Counter) -> int:
    return counted["COMPLETE"] + counted["PRUNED"]


def sampler_seed(seed: int, index: int, n_existing: int) -> int:
    return int(np.random.SeedSequence([seed, index, n_existing]).generate_state(1)[0])


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Set to FAIL every RUNNING trial whose worker process is gone; returns their numbers."""
    failed = []
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is not None:
            dead, reason = not processes.is_alive(worker), f"its worker {worker} is gone"
        else:
            age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
            dead, reason = age > UNCLAIMED_AFTER, f"running for {age:.0f} s with no worker recorded"
        if not dead:
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # it finished, or another worker failed it first
    return failed


def _fail_own_running(study: optuna.Study) -> None:
    """On the way out of a worker: its RUNNING trial (if an exception Optuna does not catch left one) fails."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") == processes.identity():
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


class _QuietFilter(logging.Filter):
    """Optuna logs every failed trial with its traceback: none for a surplus trial, nor for Ctrl-C."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return not isinstance(error, Surplus)


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.get_logger("optuna")  # makes sure Optuna's handler exists
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _QuietFilter) for f in handler.filters):
            handler.addFilter(_QuietFilter())


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe(trial: FrozenTrial, metric_name: str) -> str:
    """One line for a finished trial: state, score or why it stopped, params, duration."""
    duration = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{k}={short(v)}" for k, v in studies.model_params(trial).items())
    state = trial.state.name
    if state == "COMPLETE":
        outcome = f"{metric_name} {trial.value:.5f}"
    elif state == "PRUNED":
        steps = trial.intermediate_values
        if trial.user_attrs.get("diverged"):
            outcome = f"training diverged ({trial.user_attrs['diverged']})"
        elif trial.user_attrs.get("pruned_at") and steps:
            outcome = f"at {trial.user_attrs['pruned_at']} (validation {metric_name} {steps[max(steps)]:.5f})"
        elif steps:
            last = max(steps)
            outcome = f"at fold {last} (running {metric_name} {steps[last]:.5f})"
        else:
            outcome = ""
    else:
        outcome = trial.user_attrs.get("error") or trial.user_attrs.get("fail_reason") or ""
    return f"trial {trial.number:>4} {state:<8} {outcome} {params} ({duration:.1f} s)".replace("  (", " (")


def work(job: Job, objective: Objective | None = None,
         on_trial: Callable[[FrozenTrial], None] | None = None) -> int:
    """Run trials until the study holds ``job.n_trials`` finished ones or the time limit ends.

    ``objective``: one already built on loaded data (the tune process's own worker), else the
    competition's task loads the data here. Returns the number of trials this worker finished.
    """
    _quiet_optuna()
    if objective is None:
        task = tasks.for_competition(job.comp)
        objective = Objective(task, task.load(job.data_dir), job.model, job.time_limit)
    study = studies.load_study(job.storage, job.study)
    if study is None:
        raise UserError(f"study {job.study} vanished from {studies.describe_storage(job.storage)}")
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(job.seed, job.index, len(study.trials)))
    study.pruner = objective.pruner()
    prefix = f"[worker {job.index}] " if job.jobs > 1 else ""

    def run_trial(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", processes.identity())
        ahead = [
            t for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if t.state != TrialState.RUNNING or t.number < trial.number
        ]
        if len(ahead) >= job.n_trials:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already has {job.n_trials} finished or running trials")
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {studies.first_line(exc)}"[:500])
            raise

    last: list[FrozenTrial] = []

    def after_trial(_study: optuna.Study, frozen: FrozenTrial) -> None:
        last.append(frozen)
        if frozen.user_attrs.get("surplus"):
            return
        say(prefix + describe(frozen, objective.metric.name))  # above the trials' bar, where one is shown
        if on_trial is not None:
            on_trial(frozen)

    done = fails = 0
    try:
        while not job.time_limit.expired():
            if job.parent_pid and os.getppid() != job.parent_pid:
                break  # the tune process is gone
            fail_dead_trials(study)
            counted = counts(study)
            if finished(counted) + counted["RUNNING"] >= job.n_trials:
                break
            last.clear()
            study.optimize(run_trial, n_trials=1, catch=(Exception,), callbacks=[after_trial])
            trial = last[-1] if last else None
            if trial is None or trial.user_attrs.get("surplus"):
                continue
            if trial.state == TrialState.FAIL:
                fails += 1
                if fails >= FAILS_IN_A_ROW:
                    raise UserError(
                        f"{fails} trials in a row failed in {job.study}; the last: "
                        f"{trial.user_attrs.get('error', 'see the log above')}"
                    )
            else:
                fails, done = 0, done + 1
    finally:
        _fail_own_running(study)
    return done


def limit_threads(jobs: int) -> None:
    """Share the cores between ``jobs`` worker processes (the thread policy: models/threads.py)."""
    threads.apply(max(1, threads.budget() // jobs))


def _worker_main(job: Job) -> None:
    """Entry point of a spawned worker process."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    processes.die_with_parent()
    if job.parent_pid and os.getppid() != job.parent_pid:
        sys.exit(130)
    limit_threads(job.jobs)
    try:
        work(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as exc:
        print(f"[worker {job.index}] error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_workers(jobs: list[Job], *, on_start: Callable[[int], None], on_poll: Callable[[], None]) -> None:
    """One spawned process per job; ``on_start(pid)`` for each, ``on_poll()`` every second until all exit.

    On an exception here (Ctrl-C, SIGTERM) the workers get SIGTERM, fail their running trials and
    exit; a worker that exited 130 (interrupted) raises KeyboardInterrupt, another non-zero exit
    a UserError.
    """
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(job,), name=f"tune-worker-{job.index}") for job in jobs]
    for worker in workers:
        worker.start()
        on_start(worker.pid)
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(POLL_SECONDS)
            on_poll()
        for worker in workers:
            worker.join()
    except BaseException:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the worker fails its running trial and exits
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
        raise
    codes = [w.exitcode for w in workers]
    if any(code == 130 for code in codes):
        raise KeyboardInterrupt
    bad = [(i, code) for i, code in enumerate(codes) if code]
    if bad:
        detail = ", ".join(f"worker {i} exited with code {code}" for i, code in bad)
        raise UserError(f"{detail} (its error is printed above)")
