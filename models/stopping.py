"""When a training run stops: early stopping and the time limits (``models.training.fit``)."""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import nn

from models import distributed
from models.time_limit import TimeLimit


class StopPolicy:
    """When training stops: early stopping on the validation loss, and the time limits.

    ``own`` is ``seconds`` (a fit's ``time_limit``) as a :class:`TimeLimit`: training ends with
    the epoch that passes it. ``limit`` (the run's): training ends after the epoch past which another as long
    would not fit. With early stopping the best epoch's weights are kept (:meth:`restore_best`).
    The state (``best``) is checkpointed and restored with the run.
    """

    def __init__(self, *, patience: int | None, seconds: float | None, limit: TimeLimit | None):
        self.patience = patience
        self.limit = limit or TimeLimit(None, reserve=0.0)
        self.own = TimeLimit(seconds, self.limit.clock(), 0.0, self.limit.clock)
        self.best: dict[str, Any] = {"loss": math.inf, "state": None, "since": 0}
        self.epoch_started = self.limit.clock()

    def start_epoch(self) -> None:
        self.epoch_started = self.limit.clock()

    def after_epoch(self, log: dict[str, float], model: nn.Module) -> bool:
        """Whether training stops after the epoch ``log`` describes (every rank agrees)."""
        stop = False
        if self.patience is not None and "val_loss" in log:
            if log["val_loss"] < self.best["loss"]:
                self.best.update(loss=log["val_loss"], since=0, state=copy.deepcopy(model.state_dict()))
            else:
                self.best["since"] += 1
                stop = self.best["since"] > self.patience
        if not stop and (self.own.limited or self.limit.limited):
            epoch_seconds = self.limit.clock() - self.epoch_started
            out_of_time = self.own.expired() or self.limit.limited and not self.limit.fits(epoch_seconds)
            stop = bool(distributed.broadcast_object(out_of_time)) if distributed.world_size() > 1 else out_of_time
        return stop

    def restore_best(self, model: nn.Module) -> None:
        if self.best["state"] is not None:
            model.load_state_dict(self.best["state"])
