"""``make tune``: one persistent Optuna study per (competition, model), named ``<competition>/<model>``.

The objective is the k-fold CV score of exactly what ``make submit`` runs (``cv.cross_validate``
with the config's features, target transform, outliers and folds), scored without the config's
outlier rows; the model's parameters are the config's, overlaid by the model's search space
(``models/tabular.py``), and the first trial is the config's own params. The study's best params
then feed ``make submit`` through :func:`best_params` (``PARAMS=default`` ignores them).

Storage
    ``--storage``, else ``$OPTUNA_STORAGE``, else ``.optuna/journal.log`` under the current folder:
    an Optuna journal file (``JournalStorage`` + ``JournalFileBackend``), whose appends are
    serialised by a lock file, so several worker processes on one machine share it without
    "database is locked" errors. A URL (``postgresql://...``, ``mysql://...``, ``sqlite:///...``)
    selects ``RDBStorage`` with heartbeats, which is how workers on many machines share one study.
    SQLite is accepted but is a poor choice for concurrent workers.

Trial budget and resume
    ``--trials N`` is the study's total of finished (COMPLETE + PRUNED) trials, not "N more": the
    same command after Ctrl-C, ``kill -9`` or a timeout runs only the remainder and keeps every
    finished trial. FAIL trials do not count. Before each trial a worker checks that finished plus
    running trials are still fewer than N; a trial that loses a race for the last slot (two
    workers asking at the same instant) ends FAIL at once with user attr ``surplus``.

Dead workers
    Every trial records its worker (``host:pid:start-time``) as a user attr. A RUNNING trial whose
    worker on this host is gone is set to FAIL before the next study starts (and between trials
    of a running one), so a ``kill -9`` leaves no trial RUNNING once the study is run again.
    ``JournalStorage`` has no heartbeat in Optuna 5 (only ``RDBStorage`` implements it); for an RDB
    storage, workers also send heartbeats (``heartbeat_interval``/``grace_period``) and Optuna
    fails the stale trials of dead workers on other machines (``fail_stale_trials``).

Pruning
    After each fold the trial reports the running mean of its fold scores at step = fold index,
    and a ``PercentilePruner`` stops trials whose running mean, from the second fold on, is in the
    worst quarter of earlier trials at the same fold. The folds are the same seeded split in
    every trial, so fold k of one trial is comparable with fold k of another. A median rule on
    the first fold alone pruned near-best Lasso trials over differences of 0.0005 (bench-tune):
    pruning is for clearly hopeless trials, and TPE learns little from a pruned good one. Torch
    models are not reported per epoch: their epoch logs hold only the training loss, which is
    not the objective (a strongly regularised net has a higher training loss and may well
    validate better); a non-finite training loss (divergence) prunes the trial at once, so TPE
    learns to avoid that region, where a FAIL would teach it nothing.

Image models
    An image competition (``kind = "image"``) tunes a vision model with its registered space
    (``models/vision``): the objective is the validation accuracy of ``make submit``'s own
    validation (``pipeline.vision.validate``: the config's holdout or folds). The trial reports
    the held-out accuracy after every epoch, at step ``100 * fold + percent of the fit's epochs
    done``: the space tunes the epoch count, and with a one-cycle or cosine schedule epoch 5 of
    30 (still warming up) is not comparable with epoch 5 of 5 (finished), whereas 50% of one
    schedule is comparable with 50% of another. Trials of different lengths rarely report at
    the same step, so :class:`SchedulePruner` compares a trial with each complete trial's last
    report at or before its step, and prunes it when it is worse than their median. It waits
    for ``PRUNER_STARTUP_TRIALS`` complete trials and skips the first quarter of the first fold
    (the one-cycle warm-up). A non-finite training loss prunes at once, as for tabular nets.

Parallel workers and MLflow
    ``--jobs J`` starts J processes (multiprocessing "spawn"), each with its own TPE seed (derived
    from ``--seed``, the worker index and the study's trial count, so a resumed study does not
    replay its first proposals). One MLflow parent run per invocation (experiment = competition);
    each finished trial becomes a child run (tag ``mlflow.parentRunId``) with its params, CV
    score, state and duration. The children are written by the parent process alone, from the
    trials in the Optuna storage as they finish: worker processes never touch MLflow, so
    MLflow's SQLite store has a single writer and never reports "database is locked".
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.config import Competition
from pipeline.errors import UserError

DEFAULT_JOURNAL = Path(".optuna") / "journal.log"
HEARTBEAT_INTERVAL = 10  # seconds between a worker's heartbeats (RDB storages)
GRACE_PERIOD = 60  # seconds without a heartbeat before another worker fails the trial
UNCLAIMED_AFTER = 120  # a RUNNING trial without a worker attr this old: its worker died at birth
PRUNER_STARTUP_TRIALS = 5  # finished trials before the median rule prunes anything
FAILS_IN_A_ROW = 3  # a worker stops after this many failed trials in a row
POLL_SECONDS = 1.0


def study_name(comp: Competition, model: str) -> str:
    return f"{comp.name}/{model}"


def storage_url(storage: str | os.PathLike | None = None) -> str:
    """``storage``, else ``$OPTUNA_STORAGE``, else the journal file ``.optuna/journal.log``."""
    chosen = str(storage or os.environ.get("OPTUNA_STORAGE") or DEFAULT_JOURNAL)
    return chosen if _is_url(chosen) else str(Path(chosen).expanduser().resolve())


def _is_url(storage: str) -> bool:
    return "://" in storage


def describe_storage(url: str) -> str:
    """The storage for printing and logging: a URL's password hidden, a file path as given."""
    if not _is_url(url):
        try:
            return str(Path(url).relative_to(Path.cwd()))
        except ValueError:
            return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: say nothing of its contents
        return url.split("://", 1)[0] + "://..."


def _open_storage(url: str, *, create: bool):
    """The storage at ``url``; with ``create=False``, None when it does not exist yet."""
    import optuna

    if not _is_url(url):
        path = Path(url)
        if not path.is_file():
            if not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        # The default lock (a symlink) is the one optuna-dashboard uses on a journal file too.
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))

    import sqlalchemy

    if url.startswith("sqlite:///") and not create and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if not create:
        engine = sqlalchemy.create_engine(url, **engine_kwargs)
        try:
            has_tables = sqlalchemy.inspect(engine).has_table("studies")
        except sqlalchemy.exc.OperationalError as exc:
            raise UserError(f"cannot open the Optuna storage {describe_storage(url)}: {_first_line(exc)}") from None
        finally:
            engine.dispose()
        if not has_tables:
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" in Optuna 5
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=GRACE_PERIOD,
            )
        except (ImportError, ModuleNotFoundError) as exc:
            raise UserError(f"Optuna storage {describe_storage(url)}: {exc} (pip install -e '.[dev]')") from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise UserError(f"cannot open the Optuna storage {describe_storage(url)}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_study(url: str, name: str, *, create: bool = False, direction: str | None = None):
    """The study, or None when the storage or the study does not exist (and ``create`` is false)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _open_storage(url, create=create)
    if storage is None:
        return None
    if create:
        return optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


# --- the study's best params, for train/submit -----------------------------------------------


def best_params(comp: Competition, model: str, storage: str | None = None) -> dict | None:
    """The model params of the study's best COMPLETE trial, or None when there is no such trial.

    Returns what the model's search space returned (kept in the trial's ``model_params`` user
    attr), so derived params such as the MLP's ``hidden`` come back verbatim. Reads only: a
    missing storage is not created.
    """
    study = _load_study(storage_url(storage), study_name(comp, model))
    if study is None:
        return None
    try:
        best = study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None
    return _model_params(best)


def _model_params(trial) -> dict:
    stored = trial.user_attrs.get("model_params")
    if stored is None:
        return dict(trial.params)
    return {key: tuple(value) if isinstance(value, list) else value for key, value in stored.items()}


def _jsonable(params: dict) -> dict:
    def convert(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if hasattr(value, "item"):  # numpy scalars
            return value.item()
        return value

    return {key: convert(value) for key, value in params.items()}


# --- workers: who runs a trial, and whether it is still alive ---------------------------------


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


_worker_ids: dict[int, str] = {}


def worker_id() -> str:
    """``host:pid:start`` of this process, recorded on each trial it runs."""
    pid = os.getpid()
    if pid not in _worker_ids:
        _worker_ids[pid] = f"{socket.gethostname()}:{pid}:{_process_start(pid) or '?'}"
    return _worker_ids[pid]


def worker_alive(worker: str) -> bool:
    """False only when ``worker`` ran on this host and its process is gone (or a zombie)."""
    try:
        host, pid_text, start = worker.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True  # another machine: the RDB heartbeat covers it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):
        return False
    now = _process_start(pid)
    return start == "?" or now is None or now == start


def fail_dead_trials(study) -> list[int]:
    """Set to FAIL every RUNNING trial whose worker process is gone; returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is not None:
            dead, reason = not worker_alive(worker), f"its worker {worker} is gone"
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


def _fail_own_running(study) -> None:
    """On the way out of a worker: its RUNNING trial (if an exception Optuna does not catch left one) fails."""
    import optuna
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") == worker_id():
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


def _counts(study) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def _finished(counts: Counter) -> int:
    return counts["COMPLETE"] + counts["PRUNED"]


def _sampler_seed(seed: int, index: int, n_existing: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, index, n_existing]).generate_state(1)[0])


# --- one worker: the trial loop ----------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    comp: Competition
    data_dir: Path
    model: str
    storage: str
    study: str
    n_trials: int
    deadline: float | None  # time.time() after which no trial starts
    seed: int
    index: int
    jobs: int
    parent_pid: int = 0


class _Surplus(Exception):
    """This trial would exceed the study's trial budget: another worker took the last slot."""


def _quiet_surplus() -> None:
    """Optuna logs every failed trial with its traceback: none for a surplus trial, nor for Ctrl-C."""
    import optuna

    optuna.logging.get_logger("optuna")  # makes sure Optuna's handler exists
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _SurplusFilter) for f in handler.filters):
            handler.addFilter(_SurplusFilter())


class _SurplusFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return not isinstance(error, _Surplus)


def _describe(trial, metric_name: str) -> str:
    duration = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{k}={_short(v)}" for k, v in _model_params(trial).items())
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


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _work(job: _Job, on_trial: Callable[[Any], None] | None = None) -> int:
    """Run trials until the study holds ``job.n_trials`` finished ones or the deadline passes.

    Returns the number of trials this worker finished.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_surplus()
    if job.comp.kind == "image":
        space, evaluate, metric, pruner = _image_objective(job)
    else:
        space, evaluate, metric, pruner = _tabular_objective(job)

    study = _load_study(job.storage, job.study)
    if study is None:
        raise UserError(f"study {job.study} vanished from {describe_storage(job.storage)}")
    study.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(job.seed, job.index, len(study.trials)))
    study.pruner = pruner
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    prefix = f"[worker {job.index}] " if job.jobs > 1 else ""

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        ahead = [
            t for t in study.get_trials(deepcopy=False, states=(*finished_states, TrialState.RUNNING))
            if t.state != TrialState.RUNNING or t.number < trial.number
        ]
        if len(ahead) >= job.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"the study already has {job.n_trials} finished or running trials")
        suggested = space(trial)
        trial.set_user_attr("model_params", _jsonable(suggested))
        try:
            return evaluate(trial, suggested)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {_first_line(exc)}"[:500])
            raise

    last: list = []

    def after_trial(_study, frozen) -> None:
        last.append(frozen)
        if frozen.user_attrs.get("surplus"):
            return
        print(prefix + _describe(frozen, metric.name), flush=True)
        if on_trial is not None:
            on_trial(frozen)

    done = fails = 0
    try:
        while job.deadline is None or time.time() < job.deadline:
            if job.parent_pid and os.getppid() != job.parent_pid:
                break  # the tune process is gone
            fail_dead_trials(study)
            counts = _counts(study)
            if _finished(counts) + counts["RUNNING"] >= job.n_trials:
                break
            last.clear()
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[after_trial])
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


def _tabular_objective(job: _Job):
    """(search space, evaluate(trial, suggested) -> CV score, metric, pruner) of a tabular model.

    Reports the running mean of the fold scores after each fold; a non-finite training loss of a
    torch model prunes at once.
    """
    import optuna

    from models import registry
    from pipeline import cv, ingest, train

    data = ingest.load_tabular(job.comp, job.data_dir)
    task, metric = train.resolve_task(job.comp, data)
    config_params = config_params_of(job.comp, task, job.model)
    entry = registry.get(job.model, "tabular")
    X = data.train.drop(columns=[job.comp.target, job.comp.id])
    y = data.train[job.comp.target]
    # The config's outlier rows, left out of training, are left out of the objective too: two
    # mispriced houses would otherwise steer every study towards predicting them.
    scored_rows = ~cv.outlier_mask(job.comp, X, y)

    def evaluate(trial, suggested: dict) -> float:
        scores: list[float] = []

        def on_fold(k: int, score: float) -> None:
            scores.append(score)
            trial.report(sum(scores) / len(scores), k)
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {k}: running {metric.name} {sum(scores) / len(scores):.5f} "
                                         "is in the worst quarter of earlier trials")

        def on_epoch(k: int, log: dict) -> None:
            loss = log.get("train_loss")
            if loss is not None and not math.isfinite(loss):
                trial.set_user_attr("diverged", f"fold {k}, epoch {log.get('epoch')}")
                raise optuna.TrialPruned(f"training loss {loss} in fold {k}, epoch {log.get('epoch')}")

        result = cv.cross_validate(
            job.comp, X, y, task=task, metric=metric, model=job.model,
            params={**config_params, **suggested}, on_fold=on_fold, on_epoch=on_epoch, progress=False,
            scored_rows=scored_rows,
        )
        trial.set_user_attr("fold_scores", [float(s) for s in result.fold_scores])
        return float(result.score)

    pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=1)
    return entry.space, evaluate, metric, pruner


def schedule_step(fold: int, epoch: int, epochs: int) -> int:
    """An image trial's report step: 100 per fold, plus the percent of the fit's epochs done."""
    return 100 * fold + max(1, min(100, round(100 * (epoch + 1) / max(1, epochs))))


def _image_objective(job: _Job):
    """(search space, evaluate(trial, suggested) -> validation accuracy, metric, pruner) of a vision model."""
    import optuna

    from models import registry
    from pipeline import vision

    metric = vision.resolve_metric(job.comp)
    images = vision.load(job.comp, job.data_dir)
    _, config_params = vision.model_choice(job.comp, job.model)
    entry = registry.get(job.model, "vision")
    X, y = images.data.X_train, images.data.y_train

    def evaluate(trial, suggested: dict) -> float:
        params = vision.classifier_params({**config_params, **suggested})
        trial.set_user_attr("steps", "schedule")  # see schedule_step
        reported: set[int] = set()

        def on_epoch(fold: int, log: dict, epochs: int) -> None:
            where = f"fold {fold}, epoch {log['epoch'] + 1} of {epochs}"
            if not math.isfinite(log["train_loss"]):
                trial.set_user_attr("diverged", where)
                raise optuna.TrialPruned(f"training loss {log['train_loss']} at {where}")
            step = schedule_step(fold, log["epoch"], epochs)
            if step in reported:  # more than 100 epochs: two share a percent
                return
            reported.add(step)
            trial.report(log["val_accuracy"], step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", where)
                raise optuna.TrialPruned(f"{where}: validation {metric.name} {log['val_accuracy']:.5f} is worse "
                                         "than the median of complete trials at that point of their schedules")

        result = vision.validate(job.comp, X, y, job.model, params, on_epoch=on_epoch)
        trial.set_user_attr("fold_scores", [float(s) for s in result.fold_scores])
        return float(result.score)

    return entry.space, evaluate, metric, SchedulePruner(PRUNER_STARTUP_TRIALS)


class SchedulePruner:
    """The median rule on progress through each trial's own schedule (Optuna's pruner protocol).

    A trial at step ``s`` (see :func:`schedule_step`) is pruned when its value is worse than the
    median, over the complete trials, of each one's last report at or before ``s``. Nothing is
    pruned before ``n_startup_trials`` complete trials, nor before step ``warmup_steps``.
    """

    def __init__(self, n_startup_trials: int = PRUNER_STARTUP_TRIALS, warmup_steps: int = 25):
        self.n_startup_trials = n_startup_trials
        self.warmup_steps = warmup_steps

    def prune(self, study, trial) -> bool:
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        step = trial.last_step
        if step is None or step < self.warmup_steps:
            return False
        value = trial.intermediate_values[step]
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self.n_startup_trials:
            return False
        reached = []
        for other in complete:
            earlier = [s for s in other.intermediate_values if s <= step]
            if earlier:
                reached.append(other.intermediate_values[max(earlier)])
        if not reached:
            return False
        reached.sort()
        middle = len(reached) // 2
        median = reached[middle] if len(reached) % 2 else (reached[middle - 1] + reached[middle]) / 2
        if not math.isfinite(value):
            return True
        return value < median if study.direction == StudyDirection.MAXIMIZE else value > median


def config_params_of(comp: Competition, task: str, model: str) -> dict:
    """The params the config gives ``model``: ``[model] params``, or, for a member of the config's
    ensemble, its ``[ensemble.params.<model>]`` (what the ensemble fits, tuned params on top)."""
    from pipeline import cv

    name, params = cv.model_choice(comp, task, model)
    if comp.model.name == cv.ENSEMBLE and name in comp.ensemble.models:
        return cv.base_params(comp, name)
    return params


def _limit_threads(jobs: int) -> None:
    """Share the cores between ``jobs`` worker processes."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except ImportError:
        pass
    import torch

    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the tune process dies (kill -9 included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(job: _Job) -> None:
    """Entry point of a spawned worker process."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    _die_with_parent()
    if job.parent_pid and os.getppid() != job.parent_pid:
        sys.exit(130)
    _limit_threads(job.jobs)
    try:
        _work(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as exc:
        print(f"[worker {job.index}] error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


# --- the tune stage ----------------------------------------------------------------------------


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


def say(message: str) -> None:
    print(message, flush=True)


def tune(
    comp: Competition,
    data_dir: Path,
    *,
    model: str | None = None,
    n_trials: int = 50,
    timeout: float | None = None,
    jobs: int = 1,
    storage: str | None = None,
    seed: int = 0,
) -> TuneOutcome:
    """Run the study of ``model`` until it holds ``n_trials`` finished trials (or ``timeout`` s pass)."""
    import optuna

    from models import registry
    from pipeline import cv, ingest, tracking, train

    if n_trials < 1 or jobs < 1:
        raise UserError("--trials and --jobs must be at least 1")
    if timeout is not None and timeout <= 0:
        raise UserError("--timeout must be positive")
    started = time.time()
    if comp.kind == "image":
        from pipeline import vision

        metric = vision.resolve_metric(comp)
        vision.load(comp, data_dir)  # bad files fail here, once, before any worker starts
        task, (model, config_params) = "multiclass", vision.model_choice(comp, model)
        config_params = {**vision.classifier_defaults(), **config_params}  # what `make submit` fits untuned
        entry = registry.get(model, "vision")
        if entry.space is None:
            raise UserError(f"model {model!r} has no search space to tune (models/vision declares one per model)")
    else:
        data = ingest.load_tabular(comp, data_dir)
        task, metric = train.resolve_task(comp, data)
        model, _ = cv.model_choice(comp, task, model)
        if model == cv.ENSEMBLE:
            members = " ".join(comp.ensemble.models)
            raise UserError(f"an ensemble is tuned through its members, one study each: make tune MODEL=<one of {members}>; "
                            "the ensemble then starts each member from its study's best params")
        entry, config_params = registry.get(model, "tabular"), config_params_of(comp, task, model)
        if entry.space is None:
            raise UserError(f"model {model!r} has no search space to tune (models/tabular.py declares one per model)")
    url, name = storage_url(storage), study_name(comp, model)
    where = describe_storage(url)
    direction = "maximize" if metric.greater_is_better else "minimize"
    study = _load_study(url, name, create=True, direction=direction)
    if study.direction.name.lower() != direction:
        raise UserError(f"study {name} in {where} was made to {study.direction.name.lower()}, "
                        f"but {metric.name} needs {direction}: use another --storage")
    tuned_for = study.user_attrs.get("metric")
    if tuned_for is None:
        study.set_user_attr("metric", metric.name)
        study.set_user_attr("competition", comp.name)
        study.set_user_attr("model", model)
        # The first trial is what `make submit` fits untuned, so the best trial is never worse
        # than the defaults. Params whose names the space does not use are ignored by Optuna.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # defaults outside a space's range: tried all the same
            study.enqueue_trial({**entry.defaults, **config_params}, skip_if_exists=True)
    elif tuned_for != metric.name:
        raise UserError(f"study {name} in {where} was tuned for {tuned_for}, not {metric.name}: use another --storage")

    adopted = fail_dead_trials(study)
    for number in adopted:
        say(f"trial {number} was left RUNNING by a worker that is gone: marked FAIL")
    is_rdb = _is_url(url)
    if is_rdb:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
    counts = _counts(study)
    remaining = n_trials - _finished(counts)
    say(f"study {name} in {where}: {_finished(counts)} finished trials "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned), {counts['FAIL']} failed, "
        f"{counts['RUNNING']} running elsewhere; target {n_trials}")
    if remaining - counts["RUNNING"] <= 0:
        say(f"nothing to run: the study already has {n_trials} finished or running trials "
            "(--trials is the study's total; raise it to run more)")
        return _outcome(study, where, metric.name, counts, 0, time.time() - started)

    workers = max(1, min(jobs, remaining))
    say(f"running up to {remaining} trials with {workers} worker process{'es' if workers > 1 else ''}"
        + (f", timeout {timeout:.0f} s" if timeout else "") + (" (RDB storage with heartbeats)" if is_rdb else ""))
    deadline = started + timeout if timeout else None
    jobs_spec = [
        _Job(comp=comp, data_dir=Path(data_dir).resolve(), model=model, storage=url, study=name,
             n_trials=n_trials, deadline=deadline, seed=seed, index=i, jobs=workers,
             parent_pid=os.getpid() if workers > 1 else 0)
        for i in range(workers)
    ]
    tags = {
        "competition": comp.name,
        "model": model,
        "stage": "tune",
        "git_commit": tracking.git_commit(),
        "optuna.study": name,
        "optuna.storage": where,
        "tune.process": worker_id(),
    }
    with tracking.run(comp.name, f"tune-{model}", tags=tags) as parent:
        tracking.log_params({**comp.as_params(), "model.name": model, "task": task, "metric": metric.name,
                             "direction": direction, "optuna.study": name, "optuna.storage": where,
                             "trials": n_trials, "jobs": workers, "timeout": timeout, "seed": seed})
        say(f"mlflow run {parent.info.run_id} in {tracking.tracking_uri()}: one child run per trial")
        _close_dead_parent_runs(parent.info.experiment_id)
        children = _ChildRuns(parent.info.experiment_id, parent.info.run_id, name, metric.name, adopted)
        try:
            if workers == 1:
                children.pids.add(os.getpid())
                _work(jobs_spec[0], on_trial=children.log)
            else:
                _run_workers(jobs_spec, study, children)
        finally:
            fail_dead_trials(study)  # a worker that died leaves no RUNNING trial behind
            children.sweep(study)
        counts = _counts(study)
        outcome = _outcome(study, where, metric.name, counts, children.finished, time.time() - started)
        outcome.run_id = parent.info.run_id
        _log_summary(study, outcome)
    _say_summary(outcome, comp, model)
    return outcome


class _ChildRuns:
    """Writes one MLflow child run per trial this invocation finished, from the parent process only.

    "This invocation's" trials: those run by its own worker processes, and those it failed at
    start because their worker was gone; not those of workers on other machines sharing the study.
    """

    def __init__(self, experiment_id: str, parent_run_id: str, study: str, metric: str, adopted: list[int]):
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.study, self.metric = study, metric
        self.adopted = set(adopted)
        self.pids: set[int] = set()
        self.logged: set[int] = set()
        self.finished = 0

    def _ours(self, trial) -> bool:
        if trial.number in self.adopted:
            return True
        host, _, rest = str(trial.user_attrs.get("worker", "")).partition(":")
        return host == socket.gethostname() and rest.split(":")[0] in {str(pid) for pid in self.pids}

    def sweep(self, study) -> None:
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and self._ours(trial):
                self.log(trial)

    def log(self, trial) -> None:
        if trial.number in self.logged or trial.user_attrs.get("surplus"):
            return
        self.logged.add(trial.number)
        if trial.state.name in ("COMPLETE", "PRUNED"):
            self.finished += 1
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        def ms(moment: datetime | None) -> int:
            return int((moment or datetime.now()).timestamp() * 1000)

        client = MlflowClient()
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "optuna.study": self.study,
            "optuna.trial": str(trial.number),
            "optuna.state": trial.state.name,
            "worker": str(trial.user_attrs.get("worker", "?")),
        }
        for key in ("error", "fail_reason", "diverged"):
            if key in trial.user_attrs:
                tags[f"optuna.{key}"] = str(trial.user_attrs[key])[:5000]
        run = client.create_run(self.experiment_id, start_time=ms(trial.datetime_start), tags=tags,
                                run_name=f"trial-{trial.number}")
        end = ms(trial.datetime_complete)
        params = {**trial.params, **_model_params(trial)}
        metrics = [Metric("duration_seconds", trial.duration.total_seconds() if trial.duration else 0.0, end, 0)]
        if trial.value is not None:
            metrics.append(Metric(f"cv_{self.metric}", float(trial.value), end, 0))
        per_epoch = trial.user_attrs.get("steps") == "schedule"  # an image trial: see schedule_step
        curve = f"val_{self.metric}" if per_epoch else f"cv_{self.metric}_running"
        for step, value in sorted(trial.intermediate_values.items()):
            metrics.append(Metric(curve, float(value), end, int(step)))
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            name = "pruned_at_step" if per_epoch else "pruned_at_fold"
            metrics.append(Metric(name, float(max(trial.intermediate_values)), end, 0))
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(str(k), str(v)[:6000]) for k, v in params.items()])
        client.set_terminated(run.info.run_id, status="FAILED" if trial.state.name == "FAIL" else "FINISHED",
                              end_time=end)


def _close_dead_parent_runs(experiment_id: str) -> None:
    """A tune process killed with -9 left its MLflow parent run RUNNING: end it KILLED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in client.search_runs([experiment_id], "tags.stage = 'tune' and attributes.status = 'RUNNING'",
                                  max_results=1000):
        process = run.data.tags.get("tune.process")
        if process and not worker_alive(process):
            client.set_terminated(run.info.run_id, status="KILLED")


def _run_workers(jobs: list[_Job], study, children: _ChildRuns) -> None:
    """J spawned worker processes; the parent logs their trials to MLflow as they finish."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(job,), name=f"tune-worker-{job.index}") for job in jobs]
    for process in processes:
        process.start()
        children.pids.add(process.pid)
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(POLL_SECONDS)
            children.sweep(study)
        for process in processes:
            process.join()
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker fails its running trial and exits
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        raise
    codes = [p.exitcode for p in processes]
    if any(code == 130 for code in codes):
        raise KeyboardInterrupt
    bad = [(i, code) for i, code in enumerate(codes) if code]
    if bad:
        detail = ", ".join(f"worker {i} exited with code {code}" for i, code in bad)
        raise UserError(f"{detail} (its error is printed above)")


def _outcome(study, where: str, metric: str, counts: Counter, ran: int, wall: float) -> TuneOutcome:
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return TuneOutcome(
        study=study.study_name,
        storage=where,
        metric=metric,
        best_value=None if best is None else float(best.value),
        best_params=None if best is None else _model_params(best),
        best_trial=None if best is None else best.number,
        counts={state: counts[state] for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        ran=ran,
        wall_seconds=wall,
    )


def _log_summary(study, outcome: TuneOutcome) -> None:
    from pipeline import tracking

    tracking.log_metrics({
        "trials_complete": outcome.counts["COMPLETE"],
        "trials_pruned": outcome.counts["PRUNED"],
        "trials_failed": outcome.counts["FAIL"],
        "trials_run": outcome.ran,
        "trials_per_minute": outcome.trials_per_minute,
        "wall_seconds": outcome.wall_seconds,
    })
    if outcome.best_params is None:
        return
    tracking.log_metrics({f"best_cv_{outcome.metric}": outcome.best_value})
    tracking.log_params({f"best.{k}": v for k, v in outcome.best_params.items()} | {"best.trial": outcome.best_trial})
    tracking.log_json({"study": outcome.study, "trial": outcome.best_trial, f"cv_{outcome.metric}": outcome.best_value,
                       "params": outcome.best_params}, "best_params.json")
    for name, figure in _plots(study):
        tracking.log_figure(figure, name)


def _plots(study) -> list[tuple[str, Any]]:
    """Optuna's matplotlib plots (no plotly or browser needed); a plot the study can't make yet is skipped."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    from pipeline import plots  # noqa: F401  (selects Agg, except in a notebook)

    figures = []
    for name, plot in (
        ("optimization_history.png", vis.plot_optimization_history),
        ("param_importances.png", vis.plot_param_importances),
        ("parallel_coordinate.png", vis.plot_parallel_coordinate),
        ("intermediate_values.png", vis.plot_intermediate_values),
    ):
        with warnings.catch_warnings(), plt.rc_context():  # Optuna's plots set the ggplot style globally
            warnings.simplefilter("ignore")
            try:
                axes = plot(study)
            except Exception:  # e.g. importances need two complete trials
                continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        plt.close(figure)
        figures.append((name, figure))
    return figures


def _say_summary(outcome: TuneOutcome, comp: Competition, model: str) -> None:
    counts = outcome.counts
    say(f"study {outcome.study}: {counts['COMPLETE'] + counts['PRUNED']} finished trials "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned), {counts['FAIL']} failed; "
        f"{outcome.ran} this run in {outcome.wall_seconds:.0f} s ({outcome.trials_per_minute:.1f} trials/min)")
    if outcome.best_params is None:
        say("no complete trial yet")
        return
    params = " ".join(f"{k}={_short(v)}" for k, v in outcome.best_params.items())
    say(f"best cv {outcome.metric}: {outcome.best_value:.5f} (trial {outcome.best_trial}) {params}")
    say(f"make submit MODEL={model} now starts from these params (PARAMS=default ignores them)")
    if outcome.run_id:
        from pipeline import tracking

        say(f"mlflow run {outcome.run_id} in {tracking.tracking_uri()} (make ui to browse)")


# --- dashboard ---------------------------------------------------------------------------------


def dashboard_command(storage: str | None = None, port: int = 8080) -> list[str]:
    """``optuna-dashboard`` on 127.0.0.1 against the same storage ``tune`` uses."""
    url = storage_url(storage)
    if not _is_url(url) and not Path(url).is_file():
        raise UserError(f"no Optuna storage at {describe_storage(url)} yet: run `make tune` first")
    beside = Path(sys.executable).parent / "optuna-dashboard"
    program = str(beside) if beside.is_file() else shutil.which("optuna-dashboard")
    if program is None:
        raise UserError("optuna-dashboard is not installed (pip install -e '.[dev]')")
    # A journal file is opened by its path (the dashboard recognises a non-SQLite file as a journal).
    return [program, url, "--host", "127.0.0.1", "--port", str(port)]
