"""Where a configuration's fold fits run: in this process, in a local pool of processes, or on a
Dask cluster, through joblib in both of the latter (the engine users already run).

The unit of work is :func:`fit_fold`, a pure function of one picklable :class:`FoldJob`: fit the
fold's feature steps on its training rows (unless the job brings them fitted), fit the model,
predict the held-out rows. It gives back what the one loop (``Portfolio.fit``) needs, so the loop
does not know where the fit ran. A fold fits the same wherever it runs (the same rows, seed and
thread count give the same predictions), so a run on the cluster writes the submission of the
run in process.

- :class:`InProcess` (``[cv] fold_workers = 1``, the default): one fold after another, at the
  process's thread policy (``models/threads.py``).
- :class:`Pool` (``[cv] fold_workers = N``): N folds at once in loky worker processes, each
  fit at ``cores // N`` threads (at least one). A fold whose features the run has not cached
  yet fits them in the worker, in parallel too, and sends them back for the cache: the
  configurations after it that encode features alike get them ready, as in process.
- Dask (``[cv] cluster = "tcp://host:port"``, or ``--cluster``): joblib's ``dask`` backend on
  the scheduler at that address, as many folds at once as the cluster has worker threads, each
  fit at one thread.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from models import threads
from pipeline.config import Competition
from pipeline.errors import UserError
from pipeline.metrics import Metric
from pipeline.tasks import kfold
from pipeline.tasks.configuration import Configuration
from pipeline.tasks.fold_features import fit_features

CONNECT_SECONDS = 10  # to reach the cluster's scheduler, before the run gives up with a one-line error


@dataclass(frozen=True)
class FoldJob:
    """One fold fit, all of it picklable: ``config`` with ``extra`` (a seed, a ``time_limit``),
    the fold's training target ``y_fit``, and either its ``prepared`` features (the fitted steps,
    the training and the held-out matrices, the seconds that transform took: the run's cache) or
    the raw rows to fit them on."""

    config: Configuration
    extra: dict[str, Any]
    y_fit: np.ndarray
    metric: Metric
    proba: bool
    prepared: tuple | None = None
    comp: Competition | None = None
    X_fit: pd.DataFrame | None = None
    X_valid: pd.DataFrame | None = None
    threads: int | None = None  # threads per fit in a worker; None: the process's policy


@dataclass
class FoldFit:
    """What one fold fit gives the loop: its pipeline's parts, the held-out predictions (class
    columns normalised to sum to 1) and what predicting took (for the test set's price)."""

    features: Pipeline
    model: Any
    predictions: np.ndarray
    predict_seconds: float  # the held-out part's prediction
    transform_seconds: float  # the held-out part's transform
    history: list[dict] = field(default_factory=list)
    matrices: tuple | None = None  # the training and held-out matrices, where this fit made them: for the cache

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline([*self.features.steps, ("model", self.model)])


def fit_fold(job: FoldJob) -> FoldFit:
    """Fit one fold: its features (unless prepared), its model, its held-out predictions."""
    if job.threads is not None:
        threads.apply(job.threads)  # a worker process: every fit it runs at its share of the cores
    features, train, valid, transform_seconds = job.prepared or fit_features(
        job.comp, job.config.features, job.X_fit, job.y_fit, job.X_valid)
    matrices = None if job.prepared else (train, valid)
    model = job.config.build(**job.extra)
    kfold.fit_model(model, train, job.y_fit)
    predicting = time.perf_counter()
    predictions = kfold.predict(model, valid, job.metric, proba=job.proba or None)
    if predictions.ndim == 2:  # class columns: rows summing to 1 in float64, as the final model's
        predictions = predictions / predictions.sum(axis=1, keepdims=True)
    return FoldFit(features, model, predictions, time.perf_counter() - predicting, transform_seconds,
                   getattr(model, "history_", []), matrices)


def save_seconds(pipeline: Pipeline) -> float:
    """What pickling ``pipeline`` takes, timed once a fold (the run's model pickles every fold model:
    1,250 of them with --seeds 50 took 18 s on 2,000 rows)."""
    started = time.perf_counter()
    pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    return time.perf_counter() - started


class InProcess:
    """One fold after another in this process; its jobs come with their features prepared."""

    workers = 1
    prepares_features = True

    def map(self, jobs: list[FoldJob]) -> list[FoldFit]:
        return [fit_fold(job) for job in jobs]


class Pool:
    """``workers`` folds at once on a joblib backend: ``loky`` (local processes, each fit at
    ``threads`` threads) or ``dask`` (the cluster of ``address``, each fit at one thread)."""

    prepares_features = False  # features not cached yet are fit in the workers: in parallel too

    def __init__(self, workers: int, *, address: str | None = None):
        self.address = address
        # On a cluster, a fit for each worker thread (a cluster still starting its workers: one)
        self.workers = max(1, sum(cluster(address).nthreads().values())) if address else workers
        self.threads = 1 if address else max(1, threads.cores() // workers)

    def map(self, jobs: list[FoldJob]) -> list[FoldFit]:
        jobs = [dataclasses.replace(job, threads=self.threads) for job in jobs]
        if self.address:
            cluster(self.address)  # joblib's dask backend runs on this process's client
        # n_jobs the pool's size whatever the batch: loky keeps its processes between calls of one size
        with joblib.parallel_config(backend="dask" if self.address else "loky", n_jobs=self.workers):
            return joblib.Parallel()(joblib.delayed(fit_fold)(job) for job in jobs)


def for_cv(fold_workers: int, address: str | None) -> InProcess | Pool:
    """The executor ``[cv] fold_workers`` and ``[cv] cluster`` ask for (a cluster sizes itself)."""
    if address:
        return Pool(fold_workers, address=address)
    return Pool(fold_workers) if fold_workers > 1 else InProcess()


@functools.cache
def cluster(address: str):
    """This process's one client of the Dask scheduler at ``address``; an address with no scheduler
    is a one-line error (``stages.run`` asks before any work starts)."""
    from distributed import Client  # here: a run without a cluster never loads Dask

    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cluster {address}: no Dask scheduler answered ({type(exc).__name__}: {exc})") from None
