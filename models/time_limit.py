"""The one clock of a run: :class:`TimeLimit`.

A run's time limit (``--time-limit S``, ``TIME=S``, ``time_limit`` in a config) is made once, at
start-up, and passed down to every stage: submit, train, tune, the portfolio and the image
trainer. It answers three questions: how much time is left for work, whether a cost fits in it,
and how much is kept at the end for predicting, writing the submission and logging the model
(``reserve``). An estimator's own ``time_limit`` parameter is plain seconds for one fit (a float
clones and pickles); it makes its ``TimeLimit`` when the fit starts.

``clock`` is injectable so that tests can drive a fake one; ``time.perf_counter`` otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The one margin policy. A run keeps at the end of its limit what its last phase costs that is
# not priced by measurement (writing the submission, registering the model: MLflow round trips):
# a share of the limit, at least RESERVE_MIN seconds, never more than RESERVE_MAX_SHARE of it (a
# 20 s limit cannot keep 10 s back). What is priced by measurement (predicting the test set and
# pickling each fold model, pipeline.tasks.portfolio) is kept back on top, as it accrues. No fit
# starts, or is given, less than MIN_FIT_SECONDS of its own.
MIN_FIT_SECONDS = 1.0
RESERVE_SHARE = 0.04
RESERVE_MIN = 8.0
RESERVE_MAX_SHARE = 0.25


def check_seconds(value, name: str = "time_limit") -> float | None:
    """``value`` as a time limit: ``None`` (none), or a positive, finite number of seconds; the one
    check of a config's, a command line's and an estimator's ``time_limit`` (ValueError)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r}: a positive number of seconds or None")
    return float(value)


def default_reserve(seconds: float) -> float:
    return min(max(seconds * RESERVE_SHARE, RESERVE_MIN), seconds * RESERVE_MAX_SHARE)


@dataclass(frozen=True)
class TimeLimit:
    """``seconds`` from ``started`` (a ``clock()`` value); ``None`` seconds: no limit."""

    seconds: float | None = None
    started: float = field(default_factory=time.perf_counter)
    reserve: float | None = None  # None: default_reserve(seconds)
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)

    def __post_init__(self):
        if check_seconds(self.seconds) is not None:
            if self.reserve is None:
                object.__setattr__(self, "reserve", default_reserve(float(self.seconds)))
        elif self.reserve is None:
            object.__setattr__(self, "reserve", 0.0)

    @classmethod
    def start(cls, seconds: float | None, *, age: float = 0.0, reserve: float | None = None,
              clock: Callable[[], float] = time.perf_counter) -> TimeLimit:
        """A limit that started ``age`` seconds ago (the interpreter's start, say)."""
        return cls(seconds, clock() - age, reserve, clock)

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    @property
    def deadline(self) -> float:
        """The promise: the ``clock()`` value by which the whole run has ended."""
        return math.inf if self.seconds is None else self.started + self.seconds

    @property
    def work_deadline(self) -> float:
        """When work must stop, so that the reserve is left for predicting, writing and logging."""
        return self.deadline - self.reserve

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        """Seconds of work left (the reserve excluded); ``inf`` without a limit, never below 0."""
        return max(0.0, self.work_deadline - self.clock())

    def left_total(self) -> float:
        """Seconds left before the deadline itself, the reserve included."""
        return max(0.0, self.deadline - self.clock())

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()

    def expired(self) -> bool:
        return self.limited and self.clock() >= self.work_deadline

    def within(self, seconds: float | None) -> TimeLimit:
        """A limit for a part of the work: ``seconds`` from now, and never past this one's work
        deadline; no reserve of its own (the parent keeps it)."""
        cap = self.left() if self.limited else None
        part = cap if seconds is None else (seconds if cap is None else min(seconds, cap))
        if part is None:
            return TimeLimit(None, self.clock(), 0.0, self.clock)
        return TimeLimit(max(part, 1e-3), self.clock(), 0.0, self.clock)

    def used_share(self) -> float:
        """Elapsed time as a share of the limit (0 without one)."""
        return 0.0 if self.seconds is None else self.elapsed() / self.seconds
