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

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from models import ensemble as ensembles
from models.boosting import hurried_rate
from models.targets import forward_inverse
from models.time_limit import MIN_FIT_SECONDS, TimeLimit
from pipeline import processes
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.metrics import Metric
from pipeline.submission import check_finite
from pipeline.tasks import executor, kfold
from pipeline.tasks.base import FoldCallback
from pipeline.tasks.configuration import Configuration, Fitted, affordable_seeds, seeds_of
from pipeline.tasks.fold_features import FoldFeatures

CONFIG_SHARE = 0.6  # of the time left, the most a model that stops itself may take while others wait
MAX_EXTRA_BAGS = 4  # fold sets added to a member with the time left: its fold models are kept, 5x at most


@dataclass
class Outcome:
    fitted: list[Fitted]
    skipped: list[str]
    selection: ensembles.Selection | None
    folds: np.ndarray
    finished: bool  # every configuration ran (none skipped or dropped for time)
    skipped_reasons: dict[str, str] = field(default_factory=dict)  # each configuration that did not run: why


class Portfolio:
    """The one k-fold loop: every configuration a run fits, for ``submit``, ``train``, each
    ``tune`` trial and the portfolio, goes through :meth:`fit` on the plan's folds; :meth:`run` fits
    ``configs`` in order until ``time_limit`` and selects after each."""

    def __init__(self, comp: Competition, X: pd.DataFrame, y: pd.Series, test_rows: int, *, task: str,
                 metric: Metric, configs: tuple[Configuration, ...], methods: dict[str, Callable],
                 time_limit: TimeLimit, proba: bool, seeds: int = 1, time_shares: bool = True):
        self.comp, self.X, self.y, self.test_rows = comp, X, y, test_rows
        self.time_shares = time_shares  # False (a tuning trial): no fit is given a share, only the limit's end
        self.task, self.metric, self.configs, self.methods = task, metric, configs, methods
        self.time_limit, self.proba, self.seeds = time_limit, proba, seeds
        self.decides = proba and kfold.decides(metric)
        self.forward, self.inverse = forward_inverse(comp.target_transform)
        self.y_true = y.to_numpy()
        self.scored = kfold.kept_rows(comp, X, y)  # the rows every score of the run covers
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
        self.reserved = 0.0  # seconds kept out of the loop's time for what follows it (the stack's check)
        self.on_progress: Callable[[str, int, int], None] | None = None  # (configuration, folds done, folds)
        self.executor = executor.for_cv(comp.cv.fold_workers, comp.cv.cluster)  # where the fold fits run

    # --- scores -------------------------------------------------------------------------------
    def score(self, predictions: np.ndarray, rows: np.ndarray | None = None) -> float:
        """The run's one score of out-of-fold ``predictions`` (every training row's, in the training
        space) on those of ``rows`` (a boolean mask or indices; default all) that the plan scores."""
        mask = np.zeros(len(self.y_true), dtype=bool)
        mask[slice(None) if rows is None else rows] = True
        mask &= self.scored
        return self.score_on(predictions, mask)

    def score_on(self, predictions: np.ndarray, mask: np.ndarray) -> float:
        values = predictions[mask] if self.proba else self.inverse(predictions[mask])
        if self.decides:  # F1: the decision threshold chosen on the other folds (models.decision)
            return kfold.decided_score(self.metric, self.y_true[mask], values, self.folds[mask])
        return kfold.score(self.metric, self.y_true[mask], values, self.proba)

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

    # --- one configuration: the one loop ------------------------------------------------------
    def fit(self, config: Configuration, *, share: float = 1.0, splits: list | None = None,
            on_fold: FoldCallback | None = None, partial: bool = False) -> Fitted | None:
        """``config`` on every fold of ``splits`` (default the run's repeats), within ``share`` of
        the time left; ``None`` when the time limit dropped it. ``on_fold(k, score)`` sees each
        fold's score as it comes and may raise to stop the fit (an Optuna pruner does).
        ``partial``: a configuration cut after some folds is still kept, scored on the rows its
        folds cover (a run with nothing else finished ends with it, not with nothing)."""
        splits = self.splits if splits is None else splits
        first = splits[0][0]  # the repeat whose folds say which rows are covered
        capabilities = config.capabilities
        # While configurations wait after it, a model that stops itself takes ``share`` of the time
        # left; any other needs all of it to finish its folds.
        part = self._left() * (share if capabilities.stops_itself else 1.0) if self.time_limit.limited else None
        limit = self.time_limit.within(part)  # this configuration's clock, from now
        n_fits = len(splits)
        seeds = seeds_of(config, self.seeds)
        predict_seconds = save_seconds = 0.0
        fold_scores: list[float] = []
        histories: list[list[dict]] = []
        estimators = []
        covered = np.zeros(len(self.X), dtype=bool)
        repeat_oofs: dict[int, np.ndarray] = {}
        seed_oofs: dict[int, np.ndarray] = {}  # the first repeat's, per seed: the spread across seeds
        # A model that stops itself fits each fold in its share of the time left; any other needs
        # its whole time for every fold still to come, or it cannot finish and its folds are wasted
        # (a million rows: hist_gbm spent 236 s on two folds of five, then was dropped).
        stoppable = capabilities.stops_itself
        batch = self.executor.workers  # folds fit at once: a batch's wall time is about one fit's
        rate = None  # the learning rate after folds the time limit cut short (models.boosting.hurried_rate)
        for done in range(0, n_fits, batch):
            chunk = splits[done:done + batch]
            if self.time_limit.limited and done:
                # Against the run's time left: the share only shortens a model that stops itself.
                per_fold = limit.elapsed() / done
                left = self._left((predict_seconds + save_seconds) * n_fits / done)
                # a batch takes one fit's time however few folds it holds (per_fold: a batch over its size)
                if per_fold * batch * (1 if stoppable else -(-(n_fits - done) // batch)) > left:
                    reason = f"dropped after {done} of {n_fits} folds (a fold takes {per_fold:.0f} s, {left:.0f} s left)"
                    self.skipped_reasons.setdefault(config.name, reason)
                    say(f"  {config.name}: {reason}")
                    if partial and chunk[0][0] == first:
                        return self._fitted(config, repeat_oofs, covered, fold_scores, limit, estimators, histories,
                                            predict_seconds, save_seconds, seed_oofs, seeds)
                    return None
            chunk_fits: list[list] = [[] for _ in chunk]  # each fold's fits, seed by seed
            index = 0
            while index < len(seeds):
                extra = dict(seeds[index])
                if self.time_limit.limited and stoppable:
                    last_phase = (predict_seconds + save_seconds) * n_fits / max(done, 1)
                    left = min(self._left(last_phase), limit.left())
                    # The first fit is priced as if alone: the seeds that fit are known after it.
                    fits_left = (n_fits - done) * len(seeds) - index * len(chunk) if done or index else n_fits
                    rounds = -(-fits_left // batch) if self.time_shares else 1  # batches of fits still to run
                    extra["time_limit"] = max(left / rounds, MIN_FIT_SECONDS)
                    if rate:
                        extra["learning_rate"] = rate
                for slot, ((r, _, _, valid_idx), fit) in enumerate(zip(chunk, self._fit_folds(config, extra, chunk),
                                                                        strict=True)):
                    # the fold models of its seeds share the steps: the test set goes through them once
                    transform = fit.transform_seconds if index == 0 else 0.0
                    predict_seconds += (transform + fit.predict_seconds) * self._test_share(valid_idx)
                    check_finite(fit.predictions, config.name, "out-of-fold")
                    if r == first and len(seeds) > 1:
                        seed_oofs.setdefault(index, np.zeros((len(self.X), *fit.predictions.shape[1:])))[valid_idx] = fit.predictions
                    chunk_fits[slot].append(fit)
                    save_seconds += executor.save_seconds(fit.model if index else fit.pipeline)  # the steps are pickled once
                processes.release_memory()
                if self.time_limit.limited and not done and not index and len(seeds) > 1:
                    left = min(self._left(), limit.left()) + limit.elapsed()
                    seeds = affordable_seeds(config, seeds, left, limit.elapsed(), -(-n_fits // batch))
                index += 1
            if self.time_limit.limited and stoppable and (raised := hurried_rate(f.model for fits in chunk_fits for f in fits)):
                rate = raised
                say(f"  {config.name}: cut short by the time limit; its next folds learn at rate {rate:g}")
            for slot, (r, k, _, valid_idx) in enumerate(chunk):
                histories.extend(fit.history for fit in chunk_fits[slot])
                estimators.extend(fit.pipeline for fit in chunk_fits[slot])
                predictions = sum(fit.predictions.astype(float) for fit in chunk_fits[slot]) / len(seeds)
                repeat_oofs.setdefault(r, np.zeros((len(self.X), *predictions.shape[1:])))[valid_idx] = predictions
                if r == first:
                    covered[valid_idx] = True
                fold_scores.append(self.score(repeat_oofs[r], valid_idx) if self.scored[valid_idx].any() else float("nan"))
                if on_fold:
                    on_fold(k, fold_scores[-1])
                if self.on_progress:
                    self.on_progress(config.name, done + slot + 1, n_fits)
        return self._fitted(config, repeat_oofs, covered, fold_scores, limit, estimators, histories,
                            predict_seconds, save_seconds, seed_oofs, seeds)

    def _fit_folds(self, config: Configuration, extra: dict, chunk: list[tuple]) -> list[executor.FoldFit]:
        """``config`` (its parameters with ``extra``) fit on each fold of ``chunk`` through the run's
        executor, with the fold features the cache holds; those a worker fit join the cache."""
        jobs, keys = [], [(config.features, r, k) for r, k, _, _ in chunk]
        for key, (r, k, _, valid_idx) in zip(keys, chunk, strict=True):
            fit_idx = self.features.fit_index[(r, k)]
            if self.executor.prepares_features or key in self.features.cached:
                rows = {"prepared": (*self.features.get(config.features, (r, k), valid_idx), self.features.transform_seconds[key])}
            else:
                rows = {"comp": self.comp, "X_fit": self.X.iloc[fit_idx], "X_valid": self.X.iloc[valid_idx]}
            jobs.append(executor.FoldJob(config, extra, self.target[fit_idx], self.metric, self.proba, **rows))
        fits = self.executor.map(jobs)
        for key, fit in zip(keys, fits, strict=True):
            if fit.matrices is not None:  # features a worker fit: the next configuration's, ready
                self.features.keep(key, fit.features, *fit.matrices, fit.transform_seconds)
                fit.matrices = None
        return fits

    def _test_share(self, valid_idx: np.ndarray) -> float:
        """Test rows per held-out row: a held-out part's predict time, scaled to the test set."""
        return self.test_rows / len(valid_idx)

    def _fitted(self, config, repeat_oofs, covered, fold_scores, limit, estimators, histories, predict_seconds,
                save_seconds, seed_oofs, seeds) -> Fitted:
        each = [repeat_oofs[r] for r in sorted(repeat_oofs)]
        score = float(np.mean([self.score(oof, covered) for oof in each]))
        # The seeds the time paid for (--seeds may have shrunk after the first fit): each one's score.
        seed_scores = [self.score(seed_oofs[s], covered) for s in sorted(seed_oofs) if s < len(seeds)] if len(seeds) > 1 else []
        knob = config.capabilities.seed_param
        return Fitted(config, np.mean(each, axis=0), predict_seconds, save_seconds, fold_scores, score,
                      limit.elapsed(), ensembles.FoldBag(estimators), each, histories, covered, seed_scores,
                      [s[knob] for s in seeds] if len(seeds) > 1 else [])

    # --- the loop -----------------------------------------------------------------------------
    def _left(self, last_phase: float = 0.0) -> float:
        """Seconds of work left: the limit's, less what the fold models fit so far (and
        ``last_phase``: the one being fit) will take to predict the test set and to be saved."""
        return max(0.0, self.time_limit.left() - self.reserved - sum(f.last_phase_seconds for f in self.fitted)
                   - last_phase)

    def _estimate(self, config: Configuration, fitted: list[Fitted]) -> float | None:
        return float(np.median([f.seconds / f.config.cost for f in fitted])) * config.cost if fitted else None

    def select(self, fitted: list[Fitted]) -> ensembles.Selection:
        """The members' weights, cross-fitted on the out-of-fold predictions of the scored rows.
        One configuration is itself: weight 1, its own predictions and score."""
        if len(fitted) == 1:
            one = fitted[0]
            oof = one.oof if self.proba else self.inverse(one.oof)
            return ensembles.Selection("single", np.ones(1), 0.0, oof, one.score, {"single": one.score})
        predictions = np.stack([f.oof for f in fitted], axis=1)
        fit_rows = self.scored
        if self.proba:
            index = {c: i for i, c in enumerate(self.metric.classes)}
            target = np.array([index[v] for v in self.y_true])
            methods = {name: partial(method, loss=self._loss) for name, method in self.methods.items()}
            return ensembles.select(predictions, self.y_true, self.folds, methods,
                                    lambda y, p: kfold.decided_score(self.metric, y, p, self.folds[fit_rows])
                                    if self.decides else kfold.score(self.metric, y, p, True),
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
        fallback: Fitted | None = None  # the first configuration the time limit cut, with its folds done
        for position, config in enumerate(self.configs):
            if not self._distinct(config):
                self.skipped_reasons[config.name] = ("left out (no category of 51 to 254 levels: its features would "
                                                     "be the same as without native_categories)")
                say(f"  {config.name}: {self.skipped_reasons[config.name]}")
                continue
            if self.time_limit.limited:
                estimate = self._estimate(config, fitted)
                # With nothing fit yet, any time left is tried: a fold may take far less than its
                # floor (ridge on 2,000 rows: 0.05 s), and a cut configuration still stands alone.
                tried = fitted or fallback is not None
                if (self._left() <= 0 or tried and self._left() < MIN_FIT_SECONDS * len(self.splits)) and not any(
                        (price := self._estimate(c, fitted)) is not None and price <= self._left()
                        for c in self.configs[position:]):  # a cheap one may still fit (diamonds_cut at 60 s)
                    skipped.extend(c.name for c in self.configs[position:])
                    self.skipped_reasons.update({c.name: f"skipped (not started: {self._left():.0f} s of work left)"
                                                 for c in self.configs[position:]})
                    say(f"  time limit: {len(self.configs) - position} configuration(s) not started "
                        f"({self._left():.0f} s of work left)")
                    break
                short = self._left() / len(self.splits) < MIN_FIT_SECONDS
                if estimate is not None and estimate > self._left() and (short or not config.capabilities.stops_itself):
                    skipped.append(config.name)
                    self.skipped_reasons[config.name] = f"skipped (about {estimate:.0f} s, {self._left():.0f} s left)"
                    say(f"  {config.name}: {self.skipped_reasons[config.name]}")
                    continue
            last = position == len(self.configs) - 1
            one = self.fit(config, share=1.0 if last else CONFIG_SHARE, partial=fallback is None and not fitted)
            if one is None or not one.complete:
                skipped.append(config.name)
                fallback = fallback or one  # kept in case nothing else finishes its folds
                continue
            fitted.append(one)
            selection = self.select(fitted)
            if on_fitted:
                on_fitted(one, selection)
        if not fitted and fallback is not None:
            say(f"  {fallback.config.name}: the one model with folds done; it stands alone, scored on the "
                f"{int(fallback.covered.sum())} rows of its {len(fallback.fold_scores)} folds")
            fitted.append(fallback)
            skipped.remove(fallback.config.name)
            self.skipped_reasons.pop(fallback.config.name, None)
            selection = self.select(fitted)
            if on_fitted:
                on_fitted(fallback, selection)
        if not fitted:
            raise UserError("time limit: not one model finished a fold; give the run more time")
        finished = not skipped and fitted[0].complete
        if self.time_limit.limited and fitted[0].complete:  # a configuration skipped for its price leaves time a bag may fit
            selection, bagged = self._bag_more(selection, on_fitted)
            finished = finished and bagged
        return Outcome(self.fitted, skipped, selection, self.folds, finished=finished,
                       skipped_reasons=dict(self.skipped_reasons))

    def _distinct(self, config: Configuration) -> bool:
        """Whether ``config``'s features can differ from those of the same model without
        ``native_categories``: on data without a category of many (but not too many) levels,
        they are the same, and so would its predictions be."""
        if config.encoding == "native_levels" and self.levels_differ is None:
            self.levels_differ = kfold.native_levels_differ(self.comp, self.X)
        return config.encoding != "native_levels" or bool(self.levels_differ)

    def _splits(self, repeat: int) -> list[tuple]:
        """The folds of shuffle ``repeat``, their training rows registered with the features."""
        splits = [(repeat, k, train_idx, valid_idx)
                  for k, (train_idx, valid_idx) in enumerate(kfold.splitter(self.comp, self.task, repeat).split(self.X, self.y))]
        trains = kfold.kept_rows(self.comp, self.X, self.y)
        for r, k, train_idx, _ in splits:
            self.features.fit_index[(r, k)] = train_idx[trains[train_idx]]
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
                if weights[member.config.name] <= 0 or member.bags > extra + 1 or not member.config.capabilities.rebaggable:
                    continue
                per_bag = member.seconds / self.comp.cv.repeats
                if per_bag + member.last_phase_seconds / member.bags > self._left():
                    complete = False  # a cheaper member may still have the time
                    continue
                splits = splits or self._splits(self.comp.cv.repeats + extra)
                one = self.fit(member.config, share=CONFIG_SHARE, splits=splits)
                if one is None:
                    complete = False
                    continue
                merged = member.merged(one, self.score)
                self.fitted[next(i for i, f in enumerate(self.fitted) if f is member)] = merged
                selection = self.select(self.fitted)
                if on_fitted:
                    on_fitted(merged, selection)
        return selection, complete

