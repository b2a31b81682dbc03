"""What the gradient-boosting libraries' estimators share (``models/boosters.py`` has the three).

Each is a scikit-learn estimator around the library's own training call, in HistGradientBoosting's
vocabulary: ``early_stopping`` holds out ``validation_fraction`` of the rows given to ``fit`` (a
fraction, or a number of rows; seeded by ``random_state``; stratified for a classifier, a class's
last row always kept for training), training stops once ``n_iter_no_change`` rounds in a row (or
``patience_share`` of the rounds to the best so far, where more: :class:`Patience`) have not
lowered the held-out loss, and the model of the best round is kept: ``max_iter`` is a ceiling.
Where the split would hold out fewer than ``MIN_VALIDATION_ROWS`` rows (or leave fewer for
training), every row trains for ``UNSTOPPED_ROUNDS`` rounds at learning rate 0.1, scaled to the
learning rate (200 at 0.05), never past ``max_iter``: LightGBM's and XGBoost's own default of 100
rounds at 0.1; ``max_iter`` (10,000) is a ceiling for early stopping, not a count to train
without it. ``validation_rows_`` says which happened. ``time_limit`` (seconds for this fit, from its start; a
:class:`models.time_limit.TimeLimit`) stops training at the end of the round that reaches it,
through the library's callback; the best round so far is kept.

Fitted: ``n_iter_`` (rounds trained), ``best_iteration_`` (rounds the predictions use, the first
``best_iteration_`` of them), ``stopped_for_time_`` (the time limit ended training while the
held-out loss was still falling: the model is short of rounds, see :func:`hurried_rate`). ``random_state`` seeds the split and the library: the same seed, the
same predictions. Threads: :func:`models.threads.for_rows` to fit (``threads_``), :func:`models.threads.budget`
to predict: the process's one thread policy.

``eval_metric="mae"``: early stopping watches the held-out MAE instead of the training loss
(:data:`EVAL_METRICS`; ``pipeline.params.resolve`` sets it where the competition is scored by
MAE). ``native_categories``: the features in front of it split on categories of up to 254 levels
natively instead of encoding them (its registry entry declares the encoding: ``native_levels``).

Input: a DataFrame with ``category`` columns (:class:`features.native.NativePreprocessor`'s
output, the ``native`` encoding) goes to the library's own categorical splits; a matrix
of numbers (the one-hot preprocessor's) works as well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted

from models import threads
from models.time_limit import TimeLimit

# Fewer held-out rows than this and early stopping would follow noise: every row trains instead.
MIN_VALIDATION_ROWS = 20
UNSTOPPED_ROUNDS = 100  # at learning rate 0.1, without early stopping (scaled: 200 at 0.05)
# What early stopping may watch instead of the training loss (``eval_metric``): the competition's
# metric where it is not the loss. MAE: squared error trains, the held-out MAE picks the round
# (hotel_price, LightGBM 5-fold MAE 8.258 -> 8.135 and 8.135 -> 8.124 over two shuffles).
EVAL_METRICS = ("mae",)
# What a regression trains on (``loss``, HistGradientBoosting's names; each library maps them to
# its own objective). ``absolute_error``: for a competition scored by MAE, the median, not the mean.
LOSSES = ("squared_error", "absolute_error")
# Patience grows with the rounds the held-out loss took to reach its best, as AutoGluon's adaptive
# early stopping does (its rate, 0.3): a fixed 50 rounds ends a slow, noisy curve long before its
# best. hotel_price (MAE watched, 1,900 rounds to the first stop at 0.05): LightGBM 5-fold MAE
# 8.216 -> 8.145 (0.1), 8.052 (0.2), 8.023 (0.3) in 9 -> 18 s; the same scores on 8 other suite
# tasks, whose curves stop falling early (log loss, RMSE) and whose fits got no longer
# (bench/portfolio_members.py, ``lightgbm@patience_share=S``).
PATIENCE_SHARE = 0.3
# On a few hundred held-out rows a new best comes by chance every so often, and a patience that
# grows with it ran toward the 10,000-round ceiling (tests/test_default_portfolio.py's four
# portfolio submits on 300-row tables: 423 s instead of 123): below this many held-out rows the
# patience stays fixed. hotel_price's folds hold out about 990.
PATIENCE_SHARE_ROWS = 500


class Patience:
    """Early stopping on a held-out loss (lower is better): the best round so far, and whether
    training ends: ``patience`` rounds without a better loss, or ``share`` of the rounds it took
    to reach that best, whichever is more; on fewer than :data:`PATIENCE_SHARE_ROWS` ``held_rows``,
    the fixed ``patience`` alone."""

    def __init__(self, patience: int, share: float, held_rows: int = PATIENCE_SHARE_ROWS):
        self.patience, self.share = patience, share if held_rows >= PATIENCE_SHARE_ROWS else 0.0
        self.best, self.best_round = np.inf, -1

    def ends(self, round_: int, loss: float) -> bool:
        """After round ``round_`` (0-based) scored ``loss``: whether training ends here."""
        if loss < self.best:
            self.best, self.best_round = loss, round_
        return round_ - self.best_round >= max(self.patience, int(self.share * (self.best_round + 1)))


# A fit cut short by its time limit has not reached its best at that learning rate: the next fit
# given as little time does better at a higher one. One fold of each, early stopping inside it
# (bench/learning_rates.py: the held-out score after R rounds at 0.05, 0.1, 0.2):
#   flights_delay (210k rows; 7,500 rounds to converge at 0.05): R=400: 0.05 15.22, 0.1 14.61,
#     0.2 14.14; R=1600: 14.17, 13.70, 13.53; R=6400: 13.41, 13.42, 13.49.
#   hotel_price (10k; 1,900 rounds): R=200: 9.50, 8.83, 8.53; R=800: 8.31, 8.12, 8.29.
#   diamonds_cut (35k, log loss; 450 rounds): R=100: 0.583, 0.552, 0.543; R=400: 0.535, 0.535, 0.543.
# 0.4 ruined diamonds_cut (0.756 at its best round): twice the rate after each cut fit, up to this.
HURRIED_MAX_RATE = 0.2


def hurried_rate(models) -> float | None:
    """The learning rate the next fits of a configuration take when the time limit cut one of
    ``models`` (fitted estimators) short: twice theirs, at most :data:`HURRIED_MAX_RATE`; ``None``:
    none was cut, or the rate is already there."""
    cut = [m for m in models if getattr(m, "stopped_for_time_", False)]
    if not cut:
        return None
    rate = min(2 * max(m.learning_rate for m in cut), HURRIED_MAX_RATE)
    return rate if rate > max(m.learning_rate for m in cut) else None


def validation_split(n: int, fraction: float | int, seed: int, classes: np.ndarray | None = None, *,
                     min_rows: int = MIN_VALIDATION_ROWS):
    """(training rows, held-out rows), or None where fewer than ``min_rows`` would be held out or
    left (the torch nets ask for more: ``models.tabular``).

    ``classes``: each row's class code, for a split holding out about ``fraction`` of every class
    (a class's last row stays for training)."""
    share = fraction / n if isinstance(fraction, int | np.integer) else float(fraction)
    rng = np.random.default_rng([seed, 7919])
    if classes is None:
        held = rng.permutation(n)[: int(round(share * n))]
    else:
        parts = []
        for code in np.unique(classes):
            rows = rng.permutation(np.flatnonzero(classes == code))
            parts.append(rows[: min(len(rows) - 1, int(round(share * len(rows))))])
        held = np.concatenate(parts)
    if len(held) < min_rows or n - len(held) < min_rows:
        return None
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def as_frame(X) -> pd.DataFrame:
    """``X`` as a DataFrame with positional column names (``f0``, ``f1``, ...): the libraries refuse
    some characters in feature names, and a name is not what a tree splits on."""
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=float))
    return frame.set_axis([f"f{i}" for i in range(frame.shape[1])], axis=1)


def categorical_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]


class Booster(BaseEstimator):
    """The shared fit: checks, the held-out split, the time limit; a library subclass supplies
    ``_train(X, y, X_val, y_val, n_classes, limit, rounds)`` (setting ``booster_``, ``n_iter_`` and
    ``best_iteration_``) and ``_predict(X)`` (values, or probabilities one column per class)."""

    def _check_params(self) -> None:
        if self.eval_metric not in (None, *EVAL_METRICS):
            raise ValueError(f"eval_metric={self.eval_metric!r}: None (the loss) or one of {', '.join(EVAL_METRICS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}: one of {', '.join(LOSSES)}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name}={value!r}: a whole number, 1 or more")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not (
            (isinstance(fraction, int | np.integer) and fraction >= 1)
            or (isinstance(fraction, float | np.floating) and 0 < fraction < 1)
        ):
            raise ValueError(f"validation_fraction={fraction!r}: a fraction in (0, 1) or a number of rows")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(f"learning_rate={self.learning_rate!r}: a positive number")

    def _fit(self, X, y: np.ndarray, n_classes: int):
        limit = TimeLimit.start(self.time_limit, reserve=0.0)  # validates time_limit
        self._check_params()
        if n_classes and self.eval_metric:
            raise ValueError(f"eval_metric={self.eval_metric!r} is for regression; a classifier stops on log loss")
        if n_classes and self.loss != LOSSES[0]:
            raise ValueError(f"loss={self.loss!r} is for regression; a classifier trains on log loss")
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        frame = as_frame(X)
        self.n_features_in_ = frame.shape[1]
        self.threads_ = threads.for_rows(len(frame))  # the fit's; predicting takes every thread
        split = None
        if self.early_stopping:
            split = validation_split(len(frame), self.validation_fraction, self.random_state,
                                     y if n_classes else None)
        self.validation_rows_ = 0 if split is None else len(split[1])
        if split is None:  # too few rows to stop early on: a count of rounds, not the ceiling
            rounds = (min(self.max_iter, max(1, round(UNSTOPPED_ROUNDS * 0.1 / self.learning_rate)))
                      if self.early_stopping else self.max_iter)
            self._train(frame, y, None, None, n_classes, limit, rounds)
        else:
            fit_rows, held_rows = split
            self._train(frame.iloc[fit_rows], y[fit_rows], frame.iloc[held_rows], y[held_rows], n_classes, limit,
                        self.max_iter)
        return self

    def _patience(self, y_val) -> Patience | None:
        """The early stopping of a fit with held-out targets ``y_val`` (``None``: none held out)."""
        return None if y_val is None else Patience(self.n_iter_no_change, self.patience_share, len(y_val))

    @property
    def _threads(self) -> int:
        return threads.budget()

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "booster_")
        frame = as_frame(X)
        if frame.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {frame.shape[1]} columns; the model was fit on {self.n_features_in_}")
        return np.asarray(self._predict(frame), dtype=np.float64)  # XGBoost's are float32


class BoostedRegressor(RegressorMixin, Booster):
    def fit(self, X, y):
        return self._fit(X, np.asarray(y, dtype=np.float64), 0)

    def predict(self, X) -> np.ndarray:
        return self._outputs(X)


class BoostedClassifier(ClassifierMixin, Booster):
    def fit(self, X, y):
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs two classes or more; y has {len(self.classes_)}")
        return self._fit(X, self.label_encoder_.transform(y).astype(np.int64), len(self.classes_))

    def predict_proba(self, X) -> np.ndarray:
        probabilities = self._outputs(X)
        if probabilities.ndim == 1:  # two classes: P(classes_[1])
            return np.column_stack([1.0 - probabilities, probabilities])
        return probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 sums drift from 1

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
