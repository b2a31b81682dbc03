"""A trial's score: the task's own cross-validation of the plan that the trial's suggestion makes.

The objective is the score of exactly what ``submit`` validates: ``task.plan`` with the config's
params overlaid by the model's search space (``models/``), and ``task.cross_validate``, which runs
the same loop on the same folds and scored rows as ``submit`` (tabular: ``Portfolio.fit``).

How a trial reports progress is the task's ``progress_unit``; the objective never asks which kind
of competition it is:

``"fold"``
    the running mean of the fold scores after each fold, at step = fold index, judged by the
    percentile pruner (:func:`pipeline.tune.pruners.fold_pruner`). Torch models are not reported
    per epoch: their epoch logs hold only the training loss, which is not the objective (a
    strongly regularised net has a higher training loss and may well validate better).
``"epoch"``
    the held-out ``val_<metric>`` after every epoch, at :func:`~pipeline.tune.pruners.schedule_step`,
    judged by :class:`~pipeline.tune.pruners.SchedulePruner`.

In both, a non-finite training loss (divergence) prunes the trial at once, with user attr
``diverged``, so TPE learns to avoid that region, where a FAIL would teach it nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna

from models import registry
from models.time_limit import TimeLimit
from pipeline import studies
from pipeline.errors import OutOfTime, UserError
from pipeline.params import ENSEMBLE
from pipeline.tasks import Plan, Task
from pipeline.tune.pruners import fold_pruner, schedule_pruner, schedule_step

UNITS = ("fold", "epoch")


class Objective:
    """``objective(trial) -> score`` for one model of one task, on data already loaded.

    Raises UserError at construction for what cannot be tuned: an ensemble, or a model without a
    search space.
    """

    def __init__(self, task: Task, data: Any, model: str | None, time_limit: TimeLimit | None = None):
        if task.progress_unit not in UNITS:
            raise ValueError(f"unknown progress unit {task.progress_unit!r} (known: {', '.join(UNITS)})")
        self.task, self.data = task, data
        self.time_limit = time_limit or TimeLimit()  # the study's: a trial's folds end within it
        self.plan: Plan = task.plan(data, model=model, tuned=False)
        self.model = self.plan.model
        if self.model == ENSEMBLE:
            members = " ".join(self.plan.members)
            raise UserError(f"an ensemble is tuned through its members, one study each: make tune MODEL=<one of {members}>; "
                            "the ensemble then starts each member from its study's best params")
        self.entry = registry.get(self.plan.models.get(self.model, self.model), task.registry_kind)
        self.study_key = self.plan.study_keys.get(self.model, self.model)
        if self.entry.space is None:
            raise UserError(f"model {self.model!r} has no search space to tune (its registry entry declares none)")
        self.metric = self.plan.metric

    @property
    def direction(self) -> str:
        return "maximize" if self.metric.greater_is_better else "minimize"

    def first_trial(self) -> dict:
        """The params ``submit`` fits untuned: the study's first trial, so its best is never worse."""
        return {**self.entry.defaults, **self.task.untuned_params(self.plan)}

    def pruner(self) -> optuna.pruners.BasePruner:
        return fold_pruner() if self.task.progress_unit == "fold" else schedule_pruner()

    def __call__(self, trial: optuna.Trial) -> float:
        suggested = self.entry.space(trial)
        trial.set_user_attr("model_params", studies.jsonable(suggested))
        plan = self.task.plan(self.data, model=self.model, tuned=False, study_params=suggested,
                              time_limit=self.time_limit)
        if self.task.progress_unit == "fold":
            on_fold, on_epoch = self._fold_reports(trial), self._epoch_reports(trial, report=False)
        else:
            trial.set_user_attr("steps", "schedule")  # read by the MLflow child run: see schedule_step
            on_fold, on_epoch = None, self._epoch_reports(trial, report=True)
        try:
            result = self.task.cross_validate(self.data, plan, on_fold=on_fold, on_epoch=on_epoch)
        except OutOfTime as exc:
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("fold_scores", [float(s) for s in result.fold_scores])
        return float(result.score)

    def _fold_reports(self, trial: optuna.Trial) -> Callable[[int, float], None]:
        scores: list[float] = []

        def on_fold(fold: int, score: float) -> None:
            scores.append(float(score))
            running = sum(scores) / len(scores)
            trial.report(running, fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {fold}: running {self.metric.name} {running:.5f} "
                                         "is in the worst quarter of earlier trials")

        return on_fold

    def _epoch_reports(self, trial: optuna.Trial, *, report: bool) -> Callable[[int, dict, int], None]:
        reported: set[int] = set()
        key = f"val_{self.metric.name}"

        def on_epoch(fold: int, log: dict, epochs: int) -> None:
            epoch = int(log.get("epoch", 0))
            where = f"fold {fold}, epoch {epoch + 1} of {epochs}"
            loss = log.get("train_loss")
            if loss is not None and not math.isfinite(loss):
                trial.set_user_attr("diverged", where)
                raise optuna.TrialPruned(f"training loss {loss} at {where}")
            if not report:
                return
            step = schedule_step(fold, epoch, epochs)
            if step in reported:  # more than 100 epochs: two share a percent
                return
            reported.add(step)
            trial.report(float(log[key]), step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", where)
                raise optuna.TrialPruned(f"{where}: validation {self.metric.name} {log[key]:.5f} is worse "
                                         "than the median of complete trials at that point of their schedules")

        return on_epoch
