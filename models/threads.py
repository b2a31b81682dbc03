"""The process's one thread policy: how many threads, and how idle threads wait.

A run holds two OpenMP runtimes, scikit-learn's ``libgomp`` (HistGradientBoosting, k-means, ...)
and torch's own copy, besides the BLAS pools. By default an OpenMP thread that has finished its
share spins for a while before it sleeps; when the cores are busy (torch's pool still spinning
after a torch op, another process, the second runtime's threads) a spinning thread takes the
core that the thread it waits for needs, and a parallel loop of small steps crawls. On a shared
2-core machine a 50-iteration HistGradientBoosting fit took 0.12 s to 18 s from run to run
(10x and worse was common after a torch MLP in the same process), and 0.13 to 0.41 s with
``OMP_WAIT_POLICY=PASSIVE``, which makes idle threads sleep at once.

So, in one place:

- ``OMP_WAIT_POLICY=PASSIVE`` is set (unless set already) when this module is imported, which
  ``pipeline/__init__.py`` does before anything loads torch or scikit-learn: both runtimes read
  it when they load, and never again.
- :func:`budget` is the number of threads: ``KP_THREADS``, else the cores this process may use.
- :func:`limit` holds every pool (scikit-learn's and torch's OpenMP, the BLAS libraries, via
  ``threadpoolctl``, and torch's intra-op setting) to that number around a fit;
  :func:`apply` does the same for the rest of the process (a tuning worker's share of the cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch and scikit-learn load OpenMP

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

_chosen: int | None = None  # set by apply()


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def budget() -> int:
    """Threads per pool: :func:`apply`'s choice, else ``KP_THREADS``, else every core we may use."""
    if _chosen is not None:
        return _chosen
    given = os.environ.get("KP_THREADS", "").strip()
    return max(1, int(given)) if given.isdigit() else cores()


def apply(threads: int | None = None) -> int:
    """Hold every pool to ``threads`` (default :func:`budget`) for the rest of the process."""
    global _chosen
    _chosen = max(1, threads or budget())
    threadpool_limits(limits=_chosen)
    torch.set_num_threads(_chosen)
    return _chosen


@contextmanager
def limit(threads: int | None = None) -> Iterator[int]:
    """Every pool at ``threads`` (default :func:`budget`) inside the block, as it was after."""
    chosen = max(1, threads or budget())
    before = torch.get_num_threads()
    torch.set_num_threads(chosen)
    try:
        with threadpool_limits(limits=chosen):
            yield chosen
    finally:
        torch.set_num_threads(before)


# A booster's training rows per thread. Each boosting round is a few short parallel loops, and
# idle threads sleep between them (the passive wait policy above), so a second thread costs more
# than it gives until the rounds are long: 2 cores, LightGBM 5-fold, quiet machine, 1 thread against
# 2: hotel_price (10k rows a fold) 11.8 s against 59.7 s, the same model; diamonds_cut (35k) 4-5x
# the rounds in the same 25 s; flights_delay (210k) alike (the same rounds, RMSE 16.32 / 16.20).
ROWS_PER_THREAD = 100_000


def for_rows(rows: int) -> int:
    """Threads for a booster's fit on ``rows`` rows: one per :data:`ROWS_PER_THREAD`, at most
    :func:`budget`, at least one."""
    return max(1, min(budget(), rows // ROWS_PER_THREAD))

