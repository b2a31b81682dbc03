"""Checkpoints of a training run: written atomically, read back to continue it where it stopped.

A checkpoint is one ``torch.save`` file that ``torch.load(weights_only=True)`` reads: tensors,
numbers, strings, lists, tuples and dicts only (the NumPy RNG state is stored as a tensor).
It is written to a temporary file beside its path, flushed to disk and renamed over the old one,
so a reader (or a resumed run) sees the previous checkpoint or the new one, never half of one.
:class:`DeferredSignals` holds SIGTERM and SIGINT during a training step, so that the loop can
checkpoint the step it finished before the signal does what it did before.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import distributed


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint, every tensor on the CPU (``load_state_dict`` moves them where they belong)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_states() -> dict[str, Any]:
    """The global random states: Python, NumPy, torch's CPU generator and every CUDA device's."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class DeferredSignals:
    """``with DeferredSignals() as signals``: SIGTERM and SIGINT are noted, not acted on, until
    ``signals.deliver()`` (or the end of the block) hands them to the handlers there were before.

    Outside the main thread, or with ``enabled=False``, it changes nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum, frame) -> None:
        self.received = signum

    def __enter__(self) -> DeferredSignals:
        if self.enabled:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def deliver(self) -> None:
        """Put the old handlers back and raise the noted signal again, for them to handle."""
        self._restore()
        if self.received is not None:
            received, self.received = self.received, None
            signal.raise_signal(received)

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.deliver()
        else:
            self._restore()


@dataclass
class Progress:
    """Where a run stands: what a checkpoint saves and a resumed run starts from."""

    history: list[dict[str, float]]
    epoch: int = 0
    step: int = 0
    loss_sum: torch.Tensor | None = None  # the epoch's summed loss up to ``step``
    done: bool = False


class Checkpointer:
    """Saves a run to ``path`` (every rank takes part, rank 0 writes) and resumes it from there:
    weights, optimizer, schedule, random states (each rank's, and ``prepare``'s generators), the
    epoch and the step reached in its permutation, the history and the stop policy's state
    (``stop.best``: ``models.stopping.StopPolicy``)."""

    def __init__(self, path: str | os.PathLike | None, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, prepare: Callable, epochs: int, stop: Any):
        self.path, self.model, self.optimizer, self.scheduler = path, model, optimizer, scheduler
        self.prepare, self.epochs, self.stop = prepare, epochs, stop
        self.stateful_prepare = hasattr(prepare, "state_dict") and hasattr(prepare, "load_state_dict")

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def save(self, progress: Progress) -> float:
        """Checkpoint ``progress``; returns the seconds it took."""
        if self.path is None:
            return 0.0
        started = time.perf_counter()
        ranks = distributed.gather_objects(
            {"rng": rng_states(), "prepare": self.prepare.state_dict() if self.stateful_prepare else {}}
        )
        if distributed.is_main():
            loss_sum = progress.loss_sum if progress.loss_sum is not None else torch.zeros(())
            save_atomic({
                "version": 1, "epoch": progress.epoch, "step": progress.step, "done": progress.done,
                "world_size": distributed.world_size(),
                "epochs": self.epochs,  # a time-budgeted run resumes with the count it planned
                "loss_sum": loss_sum.detach().float().cpu(), "history": progress.history,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": None,  # bf16 autocast needs no loss scaling: there is no GradScaler
                "ranks": ranks, "best": self.stop.best,
            }, self.path)
        return time.perf_counter() - started

    def resume(self) -> Progress:
        """The saved run's progress, its states restored; a fresh start without a checkpoint."""
        if self.path is None:
            return Progress([])
        state = distributed.broadcast_object(
            load(self.path) if distributed.is_main() and os.path.exists(self.path) else None
        )
        if state is None:
            return Progress([])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if len(state["ranks"]) == distributed.world_size():  # the same ranks: each draws on as it would have
            mine = state["ranks"][distributed.rank()]
            set_rng_states(mine["rng"])
            if self.stateful_prepare:
                self.prepare.load_state_dict(mine["prepare"])
        self.stop.best = state["best"]
        return Progress(state["history"], state["epoch"], state["step"], state["loss_sum"], state["done"])
