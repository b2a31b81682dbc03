"""The anytime portfolio: configurations fit one after another until the time limit, and the best
weighted ensemble of whatever finished.

Each configuration (a registered model and its parameters, from ``pipeline/portfolios/tabular.toml``
or the config's ``[ensemble] models``) runs k-fold on the same folds. Each fold's feature steps are
fit on its training part only and shared by every configuration that encodes features the same
way. A configuration keeps its out-of-fold predictions and its fold models
(``models.ensemble.FoldBag``): the test set is predicted by their average (bagging), through the
final model itself, so that the submission is what the registered model predicts. The time that
prediction will take (each fit's measured seconds per held-out row, times the test rows) is kept
out of the time the loop may use.

Before a configuration starts, its cost is predicted from the ones already fit: the median of
their seconds per unit of their ``cost`` (the portfolio's relative price of each, measured on
this machine) times its own ``cost``. A model that cannot stop itself is skipped when that does
not fit the time left, and a later, cheaper one may still run. A model that can (a booster, the
torch MLP: its ``time_limit`` parameter) gets each fold's share of the time left, so that a
misjudged price shortens it instead of overrunning, and it runs on what is left rather than
being skipped (the selection weighs a short fit by what it scores); a fold does not start when
the folds already timed say it would not end in time, and a configuration that cannot finish its
folds is dropped. While configurations wait after it, one model takes at most ``CONFIG_SHARE`` of
the time left (CatBoost at its defaults would take all of it on a 2-core machine).

After each configuration the ensemble is selected again on the out-of-fold predictions
(``models.ensemble.select``, cross-fitted: the score printed is honest), so the result is always
the best ensemble so far.

Time left once every configuration has run or been skipped for its price goes to more bags (as
AutoGluon's repeated bagging):
each member of the ensemble but a forest, the heaviest first, is fit again on the folds of
another shuffle, and its out-of-fold and test predictions are averaged with those before (every
row's out-of-fold prediction still comes from models that did not see it), while the member's
measured time fits in what is left, up to ``MAX_EXTRA_BAGS`` times.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import BaseEnsemble
from sklearn.pipeline import Pipeline

from models import ensemble as ensembles
from models.targets import forward_inverse
from models.time_limit import TimeLimit
from pipeline import processes
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.metrics import Metric
from pipeline.submission import check_finite
from pipeline.tasks import kfold
from pipeline.tasks.fold_features import FoldFeatures

PORTFOLIO_FILE = Path(__file__).resolve().parent.parent / "portfolios" / "tabular.toml"
MIN_FOLD_SECONDS = 1.0  # a fold is not started with less time than this left
MIN_STOPPABLE_FOLD_SECONDS = 1.0  # a model that stops itself runs on a shorter share than its price
CONFIG_SHARE = 0.6  # of the time left, the most a model that stops itself may take while others wait
MAX_EXTRA_BAGS = 4  # fold sets added to a member with the time left: its fold models are kept, 5x at most


@dataclass(frozen=True)
class Configuration:
    """One entry of the portfolio: a display name, a registered model and its parameters, and its
    relative ``cost`` (a price before any configuration has been timed)."""

    name: str
    model: str
    params: dict = field(default_factory=dict)
    cost: float = 1.0


def load(task: str, path: Path | None = None) -> tuple[Configuration, ...]:
    """The ordered configurations for ``task`` (regression, binary, multiclass): data, not code."""
    with open(path or PORTFOLIO_FILE, "rb") as handle:
        raw = tomllib.load(handle)
    section = "regression" if task == "regression" else "classification"
    return tuple(Configuration(entry["name"], entry["model"], dict(entry.get("params", {})),
                               float(entry.get("cost", 1.0))) for entry in raw[section])


@dataclass
class Fitted:
    """One configuration's k-fold result. ``oof`` and ``test`` are in the space the model was
    trained in (log prices, probabilities); ``folds`` the first repeat's fold of each row."""

    config: Configuration
    oof: np.ndarray
    predict_seconds: float  # what its fold models will take to predict the test set
    fold_scores: list[float]
    score: float
    seconds: float
    bag: ensembles.FoldBag
    repeat_oofs: list[np.ndarray]
    histories: list[list[dict]]
    seed_scores: list[float] = field(default_factory=list)  # each seed's score (first repeat), with --seeds
    seeds: list[int] = field(default_factory=list)  # the seeds used, with --seeds
    bags: int = 1  # fold sets averaged into ``oof`` and ``bag``: 1, and one per extra bag
    bag_seconds: float = 0.0  # what the extra bags took (``seconds`` is the first pass's)

    def merged(self, extra: Fitted, score: Callable[[np.ndarray], float]) -> Fitted:
        """This member with ``extra`` (another bag: the same configuration on another shuffle's
        folds): out-of-fold predictions averaged by bag, fold models pooled."""
        bags = self.bags + 1
        oof = (self.oof * self.bags + extra.oof) / bags
        return dataclasses.replace(self, oof=oof, predict_seconds=self.predict_seconds + extra.predict_seconds,
                                   score=score(oof), bag=ensembles.FoldBag([*self.bag.estimators, *extra.bag.estimators]),
                                   histories=[*self.histories, *extra.histories], bags=bags,
                                   bag_seconds=self.bag_seconds + extra.seconds)


@dataclass
class Outcome:
    fitted: list[Fitted]
    skipped: list[str]
    selection: ensembles.Selection | None
    folds: np.ndarray
    finished: bool  # every configuration ran (none skipped or dropped for time)
    skipped_reasons: dict[str, str] = field(default_factory=dict)  # each configuration that did not run: why


def _accepts(model, name: str) -> bool:
    return name in model.get_params()


SEED_KNOBS = ("random_state", "random_seed", "seed")


def _seed_knob(model) -> str | None:
    return next((knob for knob in SEED_KNOBS if _accepts(model, knob)), None)


def _seeds(model, count: int) -> list[dict]:
    """The parameters of each of ``count`` seeds (the model's own seed, then the next ones); one
    fit for a model without a seed, which every seed would fit alike."""
    knob = _seed_knob(model)
    if knob is None or count == 1:
        return [{}]
    base = model.get_params()[knob]
    base = 0 if base is None else int(base)
    return [{knob: base + s} for s in range(count)]


def _is_forest(member: Fitted) -> bool:
    """A scikit-learn ensemble (ExtraTrees, a random forest): an average of randomised trees
    already, and the largest fold models (cps1988_wage: 10 ExtraTrees fold models held 1 GB, and
    their pickling pushed the run past its reserve), so more bags of it buy little."""
    return isinstance(member.bag.estimators[0].steps[-1][1], BaseEnsemble)


def _stops_itself(model) -> bool:
    """Whether ``model`` takes a ``time_limit`` (seconds for one fit) and stops at it."""
    return _accepts(model, "time_limit")


class Portfolio:
    """Fit ``configs`` in order on ``comp``'s folds until ``time_limit``; select after each."""

    def __init__(self, comp: Competition, X: pd.DataFrame, y: pd.Series, test_rows: int, *, task: str,
                 metric: Metric, configs: tuple[Configuration, ...], methods: dict[str, Callable],
                 time_limit: TimeLimit, proba: bool, seeds: int = 1):
        self.comp, self.X, self.y, self.test_rows = comp, X, y, test_rows
        self.task, self.metric, self.configs, self.methods = task, metric, configs, methods
        self.time_limit, self.proba, self.seeds = time_limit, proba, seeds
        self.forward, self.inverse = forward_inverse(comp.target_transform)
        self.y_true = y.to_numpy()
        self.outliers = kfold.outlier_mask(comp, X, y)
        self.target = np.asarray(self.forward(self.y_true)) if comp.target_transform else self.y_true
        self.features = FoldFeatures(comp, X, self.target, {})
        self.levels_differ: bool | None = None
        self.splits = [split for r in range(comp.cv.repeats) for split in self._splits(r)]
        self.fitted: list[Fitted] = []
        self.repeat_folds = [np.full(len(X), -1, dtype=int) for _ in range(comp.cv.repeats)]
        for r, k, _, valid_idx in self.splits:
            self.repeat_folds[r][valid_idx] = k
        self.folds = self.repeat_folds[0]  # where the selection's weights are cross-fitted
        self.skipped_reasons: dict[str, str] = {}
        self.on_fold: Callable[[str, int, int], None] | None = None  # (configuration, folds done, folds)

    # --- scores -------------------------------------------------------------------------------
    def _score(self, rows: np.ndarray | slice, predictions: np.ndarray) -> float:
        values = predictions if self.proba else self.inverse(predictions)
        return kfold.score(self.metric, self.y_true[rows], values, self.proba)

    def _loss(self, target: np.ndarray, combined: np.ndarray) -> float:
        """What the greedy selection lowers: the metric itself, signed (target: the fit rows'); for
        a metric on labels (accuracy, F1), log loss: a step function of the probabilities picks
        members by a handful of rows (titanic: the ensemble's cross-fitted accuracy fell as
        members came in), and the most probable class follows calibrated probabilities."""
        if self.proba and not self.metric.needs_proba:
            rows = np.arange(len(target))
            truth = np.asarray(target, dtype=int)
            p = combined[rows, truth] if combined.ndim == 2 else np.where(truth == 1, combined, 1.0 - combined)
            return float(-np.mean(np.log(np.clip(p, ensembles.EPS, 1.0))))
        values = combined if self.proba else self.inverse(combined)
        truth = target if self.proba else self.inverse(target)
        if self.proba:
            truth = np.asarray(self.metric.classes)[np.asarray(truth, dtype=int)]
        value = kfold.score(self.metric, truth, values, self.proba)
        return -value if self.metric.greater_is_better else value

    # --- one configuration --------------------------------------------------------------------
    def _fit_one(self, config: Configuration, last: bool = True, splits: list | None = None) -> Fitted | None:
        """``config`` on every fold of ``splits`` (default the run's repeats); ``None`` when it was
        dropped for time."""
        splits = self.splits if splits is None else splits
        clock = self.time_limit.clock
        started = clock()
        own_deadline = started + self._left() * (1.0 if last else CONFIG_SHARE)
        n_fits = len(splits)
        probe = kfold.create_model(config.model, config.params, self.metric)
        seeds = _seeds(probe, self.seeds)
        predict_seconds = 0.0
        fold_scores: list[float] = []
        histories: list[list[dict]] = []
        estimators = []
        repeat_oofs: dict[int, np.ndarray] = {}
        seed_oofs: dict[int, np.ndarray] = {}  # the first repeat's, per seed: the spread across seeds
        # A model that stops itself fits each fold in its share of the time left; any other needs
        # its whole time for every fold still to come, or it cannot finish and its folds are wasted
        # (a million rows: hist_gbm spent 236 s on two folds of five, then was dropped).
        stoppable = _stops_itself(probe)
        for done, (r, k, _, valid_idx) in enumerate(splits):
            if self.time_limit.limited and done:
                per_fold = (clock() - started) / done
                left = self._left(predict_seconds * n_fits / done)
                if per_fold * (1 if stoppable else n_fits - done) > left:
                    reason = f"dropped after {done} of {n_fits} folds (a fold takes {per_fold:.0f} s, {left:.0f} s left)"
                    self.skipped_reasons.setdefault(config.name, reason)
                    say(f"  {config.name}: {reason}")
                    return None
            fold_sum = None
            for seed in seeds:
                model = kfold.create_model(config.model, {**config.params, **seed}, self.metric)
                if self.time_limit.limited and _stops_itself(model):
                    left = min(self._left(predict_seconds * n_fits / max(done, 1)), own_deadline - clock())
                    share = left / ((n_fits - done) * len(seeds) - seeds.index(seed))
                    model.set_params(time_limit=max(share, MIN_FOLD_SECONDS))
                encoding = kfold.feature_encoding(model)
                features, train, valid = self.features.get(encoding, (r, k), valid_idx)
                kfold.fit_model(model, train, self.target[self.features.fit_index[(r, k)]])
                predicting = clock()
                predictions = kfold.predict(model, valid, self.metric, proba=self.proba or None)
                if predictions.ndim == 2:  # class columns: rows summing to 1 in float64, as the final model's
                    predictions = predictions / predictions.sum(axis=1, keepdims=True)
                predict_seconds += (clock() - predicting) * 2 * self.test_rows / len(valid_idx)  # 2: the features too
                check_finite(predictions, config.name, "out-of-fold")
                if r == 0 and len(seeds) > 1:
                    key = seeds.index(seed)
                    seed_oofs.setdefault(key, np.zeros((len(self.X), *predictions.shape[1:])))[valid_idx] = predictions
                fold_sum = predictions.astype(float) if fold_sum is None else fold_sum + predictions
                histories.append(getattr(model, "history_", []))
                estimators.append(_fold_pipeline(features, model))
                processes.release_memory()
            predictions = fold_sum / len(seeds)
            repeat_oofs.setdefault(r, np.zeros((len(self.X), *predictions.shape[1:])))[valid_idx] = predictions
            fold_scores.append(self._score(valid_idx, predictions))
            if self.on_fold:
                self.on_fold(config.name, done + 1, n_fits)
        each = [repeat_oofs[r] for r in sorted(repeat_oofs)]
        score = float(np.mean([self._score(slice(None), oof) for oof in each]))
        seed_scores = [self._score(slice(None), seed_oofs[s]) for s in sorted(seed_oofs)]
        return Fitted(config, np.mean(each, axis=0), predict_seconds, fold_scores, score,
                      clock() - started, ensembles.FoldBag(estimators), each, histories, seed_scores,
                      [s.get(_seed_knob(model), None) for s in seeds] if len(seeds) > 1 else [])

    # --- the loop -----------------------------------------------------------------------------
    def _left(self, predicting: float = 0.0) -> float:
        """Seconds of work left: the limit's, less what the fold models fit so far (and
        ``predicting``: the one being fit) will take to predict the test set at the end."""
        return max(0.0, self.time_limit.left() - sum(f.predict_seconds for f in self.fitted) - predicting)

    def _estimate(self, config: Configuration, fitted: list[Fitted]) -> float | None:
        if not fitted:
            return None
        per_cost = float(np.median([f.seconds / f.config.cost for f in fitted]))
        return per_cost * config.cost

    def select(self, fitted: list[Fitted]) -> ensembles.Selection:
        predictions = np.stack([f.oof for f in fitted], axis=1)
        fit_rows = ~self.outliers
        if self.proba:
            index = {c: i for i, c in enumerate(self.metric.classes)}
            target = np.array([index[v] for v in self.y_true])
            methods = {name: partial(method, loss=self._loss) for name, method in self.methods.items()}
            return ensembles.select(predictions, self.y_true, self.folds, methods,
                                    lambda y, p: kfold.score(self.metric, y, p, True),
                                    self.metric.greater_is_better, fit_rows=fit_rows, target=target)
        methods = {name: (partial(method, loss=self._loss) if name == "select" else method)
                   for name, method in self.methods.items()}
        return ensembles.select(predictions, self.y_true, self.folds, methods, self.metric.score,
                                self.metric.greater_is_better, fit_rows=fit_rows, target=self.target,
                                inverse=self.inverse)

    def run(self, on_fitted: Callable[[Fitted, ensembles.Selection], None] | None = None) -> Outcome:
        fitted = self.fitted = []
        skipped: list[str] = []
        selection = None
        for position, config in enumerate(self.configs):
            if not self._distinct(config):
                self.skipped_reasons[config.name] = ("left out (no category of 51 to 254 levels: its features would "
                                                     "be the same as without native_categories)")
                say(f"  {config.name}: {self.skipped_reasons[config.name]}")
                continue
            limit = self.time_limit
            if limit.limited:
                estimate = self._estimate(config, fitted)
                if self._left() < MIN_FOLD_SECONDS * len(self.splits) and not any(
                        (price := self._estimate(c, fitted)) is not None and price <= self._left()
                        for c in self.configs[position:]):  # a cheap one may still fit (diamonds_cut at 60 s)
                    skipped.extend(c.name for c in self.configs[position:])
                    self.skipped_reasons.update({c.name: f"skipped (not started: {self._left():.0f} s of work left)"
                                                 for c in self.configs[position:]})
                    say(f"  time limit: {len(self.configs) - position} configuration(s) not started "
                        f"({self._left():.0f} s of work left)")
                    break
                stoppable = _stops_itself(kfold.create_model(config.model, config.params, self.metric))
                short = self._left() / len(self.splits) < MIN_STOPPABLE_FOLD_SECONDS
                if estimate is not None and estimate > self._left() and (short or not stoppable):
                    skipped.append(config.name)
                    self.skipped_reasons[config.name] = f"skipped (about {estimate:.0f} s, {self._left():.0f} s left)"
                    say(f"  {config.name}: {self.skipped_reasons[config.name]}")
                    continue
            one = self._fit_one(config, last=position == len(self.configs) - 1)
            if one is None:
                skipped.append(config.name)
                continue
            fitted.append(one)
            selection = self.select(fitted)
            if on_fitted:
                on_fitted(one, selection)
        if not fitted:
            raise UserError("time limit: not one model finished its folds; give the run more time")
        finished = not skipped
        if self.time_limit.limited:  # a configuration skipped for its price leaves time a bag may fit
            selection, bagged = self._bag_more(selection, on_fitted)
            finished = finished and bagged
        return Outcome(self.fitted, skipped, selection, self.folds, finished=finished,
                       skipped_reasons=dict(self.skipped_reasons))

    def _distinct(self, config: Configuration) -> bool:
        """Whether ``config``'s features can differ from those of the same model without
        ``native_categories``: on data without a category of many (but not too many) levels,
        they are the same, and so would its predictions be."""
        if kfold.feature_encoding(kfold.create_model(config.model, config.params)) != "native_levels":
            return True
        if self.levels_differ is None:
            self.levels_differ = kfold.native_levels_differ(self.comp, self.X)
        return self.levels_differ

    def _splits(self, repeat: int) -> list[tuple]:
        """The folds of shuffle ``repeat``, their training rows registered with the features."""
        splits = [(repeat, k, train_idx, valid_idx)
                  for k, (train_idx, valid_idx) in enumerate(kfold.splitter(self.comp, self.task, repeat).split(self.X, self.y))]
        for r, k, train_idx, _ in splits:
            self.features.fit_index[(r, k)] = train_idx[~self.outliers[train_idx]]
        return splits

    def _bag_more(self, selection: ensembles.Selection,
                  on_fitted: Callable[[Fitted, ensembles.Selection], None] | None) -> tuple[ensembles.Selection, bool]:
        """Spend the time left on more bags of the ensemble's members (see the module's text); and
        whether every bag ran (none was left out for time)."""
        complete = True
        for extra in range(MAX_EXTRA_BAGS):
            splits = None
            weights = dict(zip((f.config.name for f in self.fitted), selection.weights, strict=True))
            for member in sorted(self.fitted, key=lambda f: -weights[f.config.name]):
                if weights[member.config.name] <= 0 or member.bags > extra + 1 or _is_forest(member):
                    continue
                per_bag = member.seconds / self.comp.cv.repeats
                if per_bag + member.predict_seconds / member.bags > self._left():
                    complete = False  # a cheaper member may still have the time
                    continue
                splits = splits or self._splits(self.comp.cv.repeats + extra)
                one = self._fit_one(member.config, last=False, splits=splits)
                if one is None:
                    complete = False
                    continue
                merged = member.merged(one, lambda oof: self._score(slice(None), oof))
                self.fitted[next(i for i, f in enumerate(self.fitted) if f is member)] = merged
                selection = self.select(self.fitted)
                if on_fitted:
                    on_fitted(merged, selection)
        return selection, complete


def _fold_pipeline(features, model) -> Pipeline:
    return Pipeline([*features.steps, ("model", model)])
