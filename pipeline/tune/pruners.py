"""When a trial is stopped early: the fold pruner, and the schedule pruner for per-epoch reports.

Per fold (``task.progress_unit == "fold"``)
    After each fold the trial reports the running mean of its fold scores at step = fold index,
    and a ``PercentilePruner`` stops trials whose running mean, from the second fold on, is in the
    worst quarter of earlier trials at the same fold. The folds are the same seeded split in
    every trial, so fold k of one trial is comparable with fold k of another. A median rule on
    the first fold alone pruned near-best Lasso trials over differences of 0.0005 (bench-tune):
    pruning is for clearly hopeless trials, and TPE learns little from a pruned good one.

Per epoch (``task.progress_unit == "epoch"``)
    The trial reports the held-out score after every epoch, at step ``100 * fold + percent of the
    fit's epochs done`` (:func:`schedule_step`): the space tunes the epoch count, and with a
    one-cycle or cosine schedule epoch 5 of 30 (still warming up) is not comparable with epoch 5
    of 5 (finished), whereas 50% of one schedule is comparable with 50% of another. Trials of
    different lengths rarely report at the same step, so :class:`SchedulePruner` compares a trial
    with each complete trial's last report at or before its step, and prunes it when it is worse
    than their median. It waits for ``PRUNER_STARTUP_TRIALS`` complete trials and skips the first
    quarter of the first fold (the one-cycle warm-up).
"""

from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

PRUNER_STARTUP_TRIALS = 5  # complete trials before either pruner prunes anything


def fold_pruner() -> optuna.pruners.BasePruner:
    """Prunes a running mean in the worst quarter at its fold, from the second fold on."""
    return optuna.pruners.PercentilePruner(75.0, n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=1)


def schedule_pruner() -> SchedulePruner:
    return SchedulePruner(PRUNER_STARTUP_TRIALS)


def schedule_step(fold: int, epoch: int, epochs: int) -> int:
    """A per-epoch report's step: 100 per fold, plus the percent of the fit's epochs done."""
    return 100 * fold + max(1, min(100, round(100 * (epoch + 1) / max(1, epochs))))


class SchedulePruner(optuna.pruners.BasePruner):
    """The median rule on progress through each trial's own schedule.

    A trial at step ``s`` (see :func:`schedule_step`) is pruned when its value is worse than the
    median, over the complete trials, of each one's last report at or before ``s``. Nothing is
    pruned before ``n_startup_trials`` complete trials, nor before step ``warmup_steps``.
    """

    def __init__(self, n_startup_trials: int = PRUNER_STARTUP_TRIALS, warmup_steps: int = 25):
        self.n_startup_trials = n_startup_trials
        self.warmup_steps = warmup_steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
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
