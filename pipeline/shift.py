"""Train/test shift, every tabular run: adversarial validation.

A classifier learns to tell training rows from test rows on the columns both files have (the id
left out: ids are usually numbered on, and would tell them apart trivially). Its out-of-fold AUC
says how different the two sets are: 0.5, indistinguishable; 1.0, disjoint. The columns that
separate them are ranked by permutation importance on the held-out folds: how much the AUC drops
when that column's values are shuffled. A shifted column is the usual cause of a leaderboard
shake-up: the CV measures the model on rows like the training rows, the leaderboard on the test's.

Cost: at most ``MAX_ROWS`` rows of each set (drawn with the run's seed), ``FOLDS`` folds of a
50-iteration HistGradientBoosting on the ``MAX_COLUMNS`` columns that separate the sets most on
their own (a rank statistic of every column, one vectorised pass), importances on
``PERMUTED_ROWS`` held-out rows a fold for the ``MAX_PERMUTED`` first of them (both chosen on the
fold's training rows): seconds at a
million rows (3.2 s for 1M + 250k rows of 20 columns, 2 shared cores), and little more with
5,000 columns than with 200 (a permutation of every column in every fold had taken 131 s of a
40 s run, and one fold's classifier on all 5,000 columns 39 s). The columns are encoded on their own (numbers as they are, text as
ordinal codes), not by the run's preprocessor, so that each importance names an input column.
Inside a run's time limit it gets ``TIME_SHARE`` of the work left, and a fold does not start that
the folds before it say would not end in it: the AUC is then on the rows the folds done held out.

The warning threshold, ``WARN_AUC``: an AUC of 0.6 means a random (train, test) pair is told
apart 60% of the time, 10 points above chance; Kaggle's synthetic playground tables, whose test
sets are drawn like their training sets, measure 0.50 to 0.52 this way, while one column moved by
half a standard deviation gives 0.57 to 0.63 (measured at 3,000 and 40,000 rows; 0.64 in theory). On small tables the AUC's own noise is larger:
the warning needs the AUC above ``0.5 + NOISE_SDS`` standard deviations of an AUC under no shift
(the Mann-Whitney formula, sqrt((n1 + n2 + 1) / (12 n1 n2))) as well, so that 60 rows against 24
do not warn on chance alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from models import threads
from models.time_limit import TimeLimit
from pipeline import tracking
from pipeline.console import say
from pipeline.data.tabular import TabularData
from pipeline.errors import UserError

WARN_AUC = 0.6
NOISE_SDS = 4.0
MAX_ROWS = 20_000  # of each set
FOLDS = 3
PERMUTED_ROWS = 4_000  # of each held-out fold, for the importances: their cost grows with the columns
MAX_COLUMNS = 200  # columns the classifier sees: those that separate most alone
MAX_PERMUTED = 40  # of them, those whose permutation importance is measured
TIME_SHARE = 0.1  # of a run's work time left, the most the check may take
SHOWN = 5  # columns named in the line


@dataclass(frozen=True)
class Shift:
    auc: float
    importance: dict[str, float]  # column -> mean AUC drop when shuffled, largest first
    rows: tuple[int, int]  # (train, test) rows the classifier saw

    @property
    def threshold(self) -> float:
        n_train, n_test = self.rows
        noise = math.sqrt((n_train + n_test + 1) / (12 * n_train * n_test))
        return max(WARN_AUC, 0.5 + NOISE_SDS * noise)

    @property
    def shifted(self) -> bool:
        return self.auc > self.threshold

    def worst(self, k: int) -> list[str]:
        return list(self.importance)[:k]

    def separating(self, most: int = 3) -> list[str]:
        """The columns that carry the separation: at least a quarter of the top column's importance."""
        top = max(self.importance.values(), default=0.0)
        return [c for c, drop in self.importance.items() if drop > 0 and drop >= top / 4][:most]


def _encoded(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Both sets stacked, every column a number: text and categories as codes shared by the two."""
    both = pd.concat([train, test], ignore_index=True)
    for column in both.columns:
        values = both[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            both[column] = values.astype("int64").where(values.notna())
        elif not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            codes = pd.factorize(values.astype("str").where(values.notna()), sort=True)[0]
            both[column] = np.where(codes < 0, np.nan, codes)
    return both.astype("float64")


def _sample(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) <= MAX_ROWS:
        return frame
    return frame.iloc[np.sort(rng.choice(len(frame), MAX_ROWS, replace=False))]


def separation_alone(X: np.ndarray, is_test: np.ndarray) -> np.ndarray:
    """Each column's own train-vs-test AUC, folded about 0.5 (0: no separation, 0.5: complete):
    the Mann-Whitney statistic of its ranks, gaps ranked below every value."""
    filled = np.where(np.isnan(X), -np.inf, X)
    ranks = rankdata(filled, axis=0)
    n_test = is_test.sum()
    n_train = len(is_test) - n_test
    auc = (ranks[is_test == 1].sum(axis=0) - n_test * (n_test + 1) / 2) / (n_train * n_test)
    return np.abs(auc - 0.5)


def measure(train: pd.DataFrame, test: pd.DataFrame, *, seed: int = 0, time_limit: TimeLimit | None = None) -> Shift | None:
    """The out-of-fold AUC of telling ``train`` rows from ``test`` rows on their shared columns,
    and the permutation importance of the ``MAX_PERMUTED`` columns that separate most alone
    (``train`` and ``test``: features only); within ``time_limit``, on the folds that fit in it
    (``None`` when not one did)."""
    limit = time_limit or TimeLimit()
    columns = [c for c in train.columns if c in test.columns]
    rng = np.random.default_rng(seed)
    train, test = _sample(train[columns], rng), _sample(test[columns], rng)
    X = _encoded(train, test).to_numpy()
    is_test = np.r_[np.zeros(len(train)), np.ones(len(test))]
    oof = np.full(len(X), np.nan)
    drops = np.zeros(len(columns))
    folds = StratifiedKFold(min(FOLDS, len(test), len(train)), shuffle=True, random_state=seed)
    done = 0
    with threads.limit():
        for fit, held in folds.split(X, is_test):
            if done and limit.elapsed() / done > limit.left():
                break
            # Chosen on the fold's training rows: columns picked on the rows they are scored on
            # would separate noise (5,000 random columns: a held-out AUC of 0.68).
            kept = np.argsort(-separation_alone(X[fit], is_test[fit]), kind="stable")[:MAX_COLUMNS]
            model = HistGradientBoostingClassifier(max_iter=50, learning_rate=0.2, early_stopping=False,
                                                   random_state=seed)
            model.fit(X[np.ix_(fit, kept)], is_test[fit])
            oof[held] = model.predict_proba(X[np.ix_(held, kept)])[:, 1]
            some = np.sort(rng.choice(held, min(PERMUTED_ROWS, len(held)), replace=False))
            base = roc_auc_score(is_test[some], oof[some])
            for position in range(min(MAX_PERMUTED, len(kept))):
                shuffled = X[np.ix_(some, kept)]
                shuffled[:, position] = rng.permutation(shuffled[:, position])
                drops[kept[position]] += base - roc_auc_score(is_test[some], model.predict_proba(shuffled)[:, 1])
            done += 1
    if not done:
        return None
    held = ~np.isnan(oof)
    ranked = sorted(((columns[j], drops[j] / done) for j in np.flatnonzero(drops)), key=lambda pair: -pair[1])
    return Shift(float(roc_auc_score(is_test[held], oof[held])), {c: float(d) for c, d in ranked},
                 (int((is_test[held] == 0).sum()), int((is_test[held] == 1).sum())))


def describe(shift: Shift) -> str:
    named = ", ".join(f"{c} {d:+.3f}" for c, d in list(shift.importance.items())[:SHOWN])
    return (f"shift: train-vs-test AUC {shift.auc:.3f} on {shift.rows[0]} + {shift.rows[1]} rows "
            f"(0.5: alike; warns above {shift.threshold:.2f}); columns that separate them: {named or 'none'}")


def check_drop(data: TabularData, *, id_column: str, target: str, drop: int) -> list[str]:
    """The feature columns shift is measured on; ``drop`` (K) must leave at least one (before any work)."""
    features = [c for c in data.train.columns if c not in (id_column, target) and c in data.test.columns
                and (data.train[c].notna().any() or data.test[c].notna().any())]  # an empty column tells nothing
    if drop >= len(features):
        raise UserError(f"--drop-shifted {drop}: the table has only {len(features)} feature columns")
    return features


def check(data: TabularData, *, id_column: str, target: str, drop: int = 0, seed: int = 0,
          time_limit: TimeLimit | None = None) -> TabularData:
    """Measure, print one line, log it to the active run, warn when shifted; with ``drop`` (K),
    the K worst columns leave both sets, and the data without them is returned."""
    features = check_drop(data, id_column=id_column, target=target, drop=drop)
    if not features:
        say("shift: not measured (no shared feature columns)")
        return data
    share = time_limit.within(time_limit.left() * TIME_SHARE) if time_limit is not None else None
    shift = measure(data.train[features], data.test[features], seed=seed, time_limit=share)
    if shift is None:
        say(f"shift: not measured (time limit: not one fold fit in its {share.seconds:.0f} s)")
        return data
    say(describe(shift))
    tracking.log_metrics({"shift_auc": shift.auc, "shift_threshold": shift.threshold})
    tracking.log_json(shift.importance, "shift_columns.json")
    tracking.log_params({"shift.columns": ", ".join(shift.worst(SHOWN))})
    if shift.shifted:
        say(f"warning: the test set differs from the training set (AUC {shift.auc:.3f} > {shift.threshold:.2f}); "
            f"most of all in {', '.join(shift.separating())}: the CV may not track the leaderboard "
            "(--drop-shifted K drops the K worst columns)")
    if drop:
        gone = shift.worst(drop)
        say(f"shift: dropping {', '.join(gone)} (--drop-shifted {drop})")
        tracking.log_params({"shift.dropped": ", ".join(gone)})
        return dataclasses.replace(data, train=data.train.drop(columns=gone), test=data.test.drop(columns=gone))
    return data
