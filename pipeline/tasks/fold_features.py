"""Each fold's fitted feature steps, and while they fit, its matrices: the portfolio's
configurations that encode features alike share them (``pipeline.tasks.portfolio``)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from pipeline.config import Competition
from pipeline.tasks import kfold

CACHE_BYTES = 1 << 29  # fold feature matrices kept for the next configuration, up to this size: the
# 4 GB a million-row run may use (bench/scale.py) holds the data, the models and this


class FoldFeatures:
    """Each fold's fitted feature steps (fit on its training part only) and, while they fit in
    ``CACHE_BYTES``, its matrices: shared by the configurations that encode features alike."""

    def __init__(self, comp: Competition, X: pd.DataFrame, target: np.ndarray,
                 fit_index: dict[tuple[int, int], np.ndarray]):
        self.comp, self.X, self.target, self.fit_index = comp, X, target, fit_index
        self.cached: dict[tuple, tuple] = {}
        self.bytes = 0
        self.transform_seconds: dict[tuple, float] = {}  # a held-out part's transform: the test set's price

    def get(self, features: tuple[str, tuple[str, ...]], split: tuple[int, int], valid_idx: np.ndarray):
        """(the fitted feature steps, the training part's matrix, the held-out part's matrix), for
        ``features``: an encoding and the crafted steps (``Configuration.features``).

        Not cached, they are fit again: ``fit_transform`` is what cross-fits the training rows'
        target encoding, where ``transform`` would encode each row with its own target."""
        key = (features, *split)
        if key in self.cached:
            return self.cached[key]
        fit_idx = self.fit_index[split]
        steps, train, valid, seconds = fit_features(self.comp, features, self.X.iloc[fit_idx], self.target[fit_idx],
                                                    self.X.iloc[valid_idx])
        self.keep(key, steps, train, valid, seconds)
        return steps, train, valid

    def keep(self, key: tuple, steps, train, valid, transform_seconds: float) -> None:
        """A fold's fitted steps and matrices (``key``: features, repeat, fold), fit here or by a
        worker: cached while they fit in ``CACHE_BYTES``."""
        self.transform_seconds[key] = transform_seconds
        size = sum(getattr(m, "nbytes", 0) or int(m.memory_usage(deep=True).sum()) for m in (train, valid))
        if self.bytes + size <= CACHE_BYTES:
            self.cached[key] = (steps, train, valid)
            self.bytes += size


def fit_features(comp: Competition, features: tuple[str, tuple[str, ...]], X_fit: pd.DataFrame, y_fit: np.ndarray,
                 X_valid: pd.DataFrame):
    """A fold's feature steps (``features``: an encoding and the crafted steps) fit on its training
    rows: (the steps, the training matrix, the held-out matrix, the seconds the held-out transform
    took); here or in a worker (``pipeline.tasks.executor``)."""
    encoding, crafted = features
    steps = kfold.build_features(comp, encoding, crafted)
    train = steps.fit_transform(X_fit, y_fit)
    started = time.perf_counter()
    valid = steps.transform(X_valid)
    return steps, train, valid, time.perf_counter() - started
