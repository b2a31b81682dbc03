"""Tabular competitions: train.csv, test.csv and sample_submission.csv.

k-fold cross-validation with the config's features fit inside each training fold
(``pipeline.tasks.kfold``); an ensemble's members share each fold's features, and their weights
are cross-fitted on the members' out-of-fold predictions. An ensemble writes one MLflow child run
per member. The refit is one ``Pipeline(features, model)`` on every training row, logged as the
run's MLflow model (``pipeline.models_io``).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from features import roles
from features.rules import RowRule
from models import ensemble as ensembles
from models.time_limit import TimeLimit
from models.training import pick_device
from pipeline import models_io, params, plots, shift, submission, tracking
from pipeline import predictions as predictions_io
from pipeline.config import Competition
from pipeline.console import say
from pipeline.data import tabular as files
from pipeline.data.tabular import TabularData
from pipeline.errors import UserError
from pipeline.metrics import Metric, infer_metric, infer_task
from pipeline.metrics import get as get_metric
from pipeline.tasks import budget, kfold
from pipeline.tasks.base import CVResult, EpochCallback, FileTask, FoldCallback, Plan

# What runs when neither the command line nor the config names a model: an ensemble of these,
# unless the config lists [ensemble] models. The torch MLP is in where it paid on the tests'
# tables (classification: out-of-fold log loss 0.11 against 0.16 binary, 0.21 against 0.29
# multiclass), not for regression (its stack with ridge and trees scored no better).
DEFAULT_MODEL = params.ENSEMBLE
DEFAULT_MEMBERS = {"regression": ("hist_gbm", "ridge"),
                   "binary": ("hist_gbm_classifier", "logistic", "mlp_classifier"),
                   "multiclass": ("hist_gbm_classifier", "logistic", "mlp_classifier")}


class TabularTask(FileTask):
    files = files
    registry_kind = "tabular"
    progress_unit = "fold"
    _cv_rows: np.ndarray | None = None  # the rows validate's CV held out, for the refit's logged OOF
    drop_shifted: int = 0  # --drop-shifted K: the K columns that most separate train from test leave

    def load(self, data_dir: Path) -> TabularData:
        data = super().load(data_dir)
        if self.comp.outliers is not None:
            try:
                RowRule.parse(self.comp.outliers).check_columns(data.train.columns)
            except ValueError as exc:
                raise UserError(f"{self.comp.name}: outliers: {exc} ({self.comp.train_file})") from None
        return data

    def _task_and_metric(self, data: TabularData) -> tuple[str, Metric]:
        comp = self.comp
        task = comp.task or infer_task(data.train[comp.target])
        sample_targets = submission.sample_targets(data.sample, comp.id)
        metric = get_metric(comp.metric or infer_metric(task, data.sample[sample_targets] if sample_targets else None))
        if task != "regression":  # the column order of predict_proba, for scores and submissions
            metric = metric.with_classes(np.unique(data.train[comp.target].to_numpy()))
        if len(sample_targets) > 1:  # a probability column per class: each must map, before any work
            submission.class_columns(sample_targets, metric.classes or (), comp.target)
        return task, metric

    def plan(self, data: TabularData, *, model: str | None = None, cli_params: dict | None = None,
             tuned: bool = True, study_params: dict | None = None, started: float | None = None) -> Plan:
        """``started``: the run's ``perf_counter()`` start, from which ``time_limit`` counts."""
        task, metric = self._task_and_metric(data)
        comp = self.comp
        if comp.model.name is None and not comp.ensemble.models:  # the default ensemble's members
            comp = dataclasses.replace(comp, ensemble=dataclasses.replace(comp.ensemble, models=DEFAULT_MEMBERS[task]))
        if metric.name == "rmsle" and comp.target_transform is None and (data.train[comp.target] >= 0).all():
            say("target: models learn log(1 + target), as RMSLE scores it; predictions are exp'd back")
            comp = self.comp = dataclasses.replace(comp, target_transform="log1p")
        name = params.choose_model(comp, self.registry_kind, task, DEFAULT_MODEL, model)
        members = params.members(comp, name, tuned=tuned, study=study_params, cli=cli_params)
        plan = Plan(task, metric, name, members)
        return self._within_time_limit(data, plan, started) if comp.time_limit and started is not None else plan

    def _within_time_limit(self, data: TabularData, plan: Plan, started: float) -> Plan:
        """``plan`` cut to fit the time limit (pipeline/tasks/budget.py); the CV's deadline set."""
        limit = self.comp.time_limit
        X, y = self._xy(data)
        features, costs = budget.probe(self.comp, X, y, plan.members, plan.metric)
        deadline = started + limit - max(limit * budget.RESERVED_SHARE, budget.RESERVED_SECONDS)
        left = deadline - time.perf_counter()
        fitted = budget.fit(self.comp, plan.members, features, costs, left)
        budget.report(limit, left, fitted)
        if (fitted.folds, fitted.repeats) != (self.comp.cv.folds, self.comp.cv.repeats):
            cv = dataclasses.replace(self.comp.cv, folds=fitted.folds, repeats=fitted.repeats)
            self.comp = dataclasses.replace(self.comp, cv=cv)
        return dataclasses.replace(plan, members=fitted.members, deadline=deadline, cuts=tuple(fitted.cuts))

    def untuned_params(self, plan: Plan) -> dict:
        return params.config_params(self.comp, plan.model)

    def describe(self, data: TabularData, plan: Plan) -> list[str]:
        model = plan.model + (f" of {', '.join(plan.members)}" if plan.model == params.ENSEMBLE
                              else f" {plan.params or ''}".rstrip())
        return [f"data: {data.source} ({len(data.train)} train rows, {len(data.test)} test rows)",
                f"task: {plan.task}, metric: {plan.metric.name}{'' if self.comp.metric else ' (inferred)'}, "
                f"model: {model}",
                f"columns: {self.roles_summary(data)}"]

    def roles_summary(self, data: TabularData) -> str:
        """The columns' roles on every training row, in one line (each fold infers its own)."""
        found = roles.infer_roles(self._xy(data)[0], **kfold.role_options(self.comp))
        return roles.summary(found, self.comp.id)

    def tags(self, data: TabularData, plan: Plan) -> dict[str, str]:
        return {"device": str(pick_device())}

    def run_params(self, data: TabularData, plan: Plan) -> dict:
        return {"model.name": plan.model, "task": plan.task, "metric": plan.metric.name,
                "columns.roles": self.roles_summary(data)[:6000], "cv.folds_run": self.comp.cv.folds,
                "cv.repeats_run": self.comp.cv.repeats,
                **({"time_limit.cuts": "; ".join(plan.cuts)[:6000] or "none"} if plan.deadline else {}),
                **{f"params.{name}.{k}": v for name, p in plan.members.items() for k, v in p.items()}}

    def _xy(self, data: TabularData) -> tuple[pd.DataFrame, pd.Series]:
        return data.train.drop(columns=[self.comp.target, self.comp.id]), data.train[self.comp.target]

    def cross_validate(self, data: TabularData, plan: Plan, *, on_fold: FoldCallback | None = None,
                       on_epoch: EpochCallback | None = None, for_tuning: bool = False,
                       progress: bool | None = False) -> CVResult:
        """A single model's CV; ``for_tuning`` scores without the config's outlier rows, which the
        training folds leave out too: two mispriced houses would otherwise steer every study."""
        if plan.model == params.ENSEMBLE:
            raise UserError("an ensemble is cross-validated through its members")
        X, y = self._xy(data)
        scored = ~kfold.outlier_mask(self.comp, X, y) if for_tuning else None
        return kfold.cross_validate_many(self.comp, X, y, task=plan.task, metric=plan.metric, models=plan.members,
                                         on_fold=on_fold, on_epoch=on_epoch, progress=progress,
                                         scored_rows=scored)[plan.model]

    def check_shift(self, data: TabularData, plan: Plan) -> TabularData:
        limit = None if plan.deadline is None else TimeLimit(max(plan.deadline - time.perf_counter(), 1e-3),
                                                             reserve=0.0)
        return shift.check(data, id_column=self.comp.id, target=self.comp.target, drop=self.drop_shifted,
                           seed=self.comp.cv.seed, time_limit=limit)

    def validate(self, data: TabularData, plan: Plan, *, progress: bool | None) -> CVResult:
        comp, metric = self.comp, plan.metric
        X, y = self._xy(data)
        proba = plan.model == params.ENSEMBLE and metric.classes is not None  # classifiers blend probabilities
        results = kfold.cross_validate_many(comp, X, y, task=plan.task, metric=metric, models=plan.members,
                                            progress=progress, proba=proba, deadline=plan.deadline)
        outliers = kfold.outlier_mask(comp, X, y)
        rows = next(iter(results.values())).folds >= 0  # all, unless the time limit stopped the CV early
        self._cv_rows = rows
        if not rows.all():
            done = len(np.unique(next(iter(results.values())).folds[rows]))
            say(f"time limit: the CV stopped after {done} of {comp.cv.folds} folds; "
                f"scores and weights come from their {int(rows.sum())} rows")
            results = {name: _rows(result, rows) for name, result in results.items()}
            y, outliers = y[rows], outliers[rows]
        scores, without = {}, {}
        for name, result in results.items():
            scores[name], without[name] = result.score, _without(result, y, outliers, metric, proba)
            if len(results) > 1:
                say(f"  {name}: cv {metric.name} {result.score:.5f}{_spread(result)}"
                    + (f" ({without[name]:.5f} without outlier rows)" if comp.outliers else ""))
        if plan.model == params.ENSEMBLE:
            for name, result in results.items():
                with tracking.child_run(name, tags={"model": name, "parent_model": plan.model}):
                    tracking.log_params({f"params.{k}": v for k, v in plan.members[name].items()})
                    self._log_result(result, metric, data, name, rows)
            if len(np.unique(next(iter(results.values())).folds)) > 1:
                result = (_combine_proba if proba else _combine)(comp, results, plan.members, y, metric, ~outliers)
            else:
                result = _best_alone(comp, results, plan.members, metric)
            if len(next(iter(results.values())).repeats) > 1:
                result = _ensemble_repeats(comp, result, results, y, metric, proba)
            scores[plan.model], without[plan.model] = result.score, _without(result, y, outliers, metric, proba)
            tracking.log_json(result.weights, "ensemble_weights.json")
            tracking.log_params({f"weight.{name}": round(w, 4) for name, w in result.weights.items()})
        else:
            result = results[plan.model]
            result.final = kfold.create_model(plan.model, plan.params)
        result.scores, result.scores_without_outliers = scores, without
        self._log_result(result, metric, data, plan.model, rows)
        members, first = {**results, plan.model: result}, next(iter(results.values()))  # the folds: a member's
        predictions_io.log_oof(data.train[comp.id][rows], y, [r.folds for r in first.repeats] or [first.folds],
                            {name: [r.oof for r in one.repeats] or [one.oof] for name, one in members.items()},
                            metric.classes if _probabilities(plan, metric) else None)
        if len(scores) > 1:
            tracking.log_figure(plots.model_comparison(scores, metric.name), "model_comparison.png")
        say(f"cv {metric.name}: {result.score:.5f}{_spread(result)} "
            f"(folds: {', '.join(f'{s:.4f}' for s in result.fold_scores)})")
        if comp.outliers:
            say(f"cv {metric.name} without the outlier rows: {without[plan.model]:.5f}")
        return result

    def refit(self, data: TabularData, plan: Plan, result: CVResult, *, progress: bool | None = None):
        X, y = self._xy(data)
        estimator = kfold.fit_all(self.comp, X, y, result.final)
        rows = self._cv_rows if self._cv_rows is not None else np.ones(len(X), dtype=bool)  # those with OOF
        models_io.log_tabular(self.comp, data.train[rows], plan, estimator, result,
                              ~kfold.outlier_mask(self.comp, X, y)[rows])
        return estimator

    def predict(self, fitted, data: TabularData, plan: Plan) -> np.ndarray:
        sample, metric = data.sample, plan.metric
        per_class = len(submission.sample_targets(sample, self.comp.id)) > 1
        predictions = kfold.predict(fitted, data.test.drop(columns=[self.comp.id]), metric, per_class=per_class,
                                    proba=submission.wants_probabilities(sample, self.comp.id, metric))
        submission.check_finite(predictions, plan.model, "test")
        proba = _probabilities(plan, metric)
        by_member = predictions_io.member_predictions(fitted, data.test.drop(columns=[self.comp.id]), metric,
                                                      plan.model, proba=proba)
        predictions_io.log_test(data.test[self.comp.id], by_member, metric.classes if proba else None)
        return predictions

    def submission(self, data: TabularData, plan: Plan, predictions: np.ndarray, path: Path) -> int:
        frame = submission.finalize(
            data.sample, data.test[self.comp.id], predictions,
            id_column=self.comp.id, positive=self.comp.target_transform == "log", path=path,
            labels=plan.task != "regression" and not plan.metric.needs_proba,
            classes=plan.metric.classes, target=self.comp.target, top_k=plan.metric.top_k,
        )
        return len(frame)

    def local_score(self, data: TabularData, plan: Plan, predictions: np.ndarray) -> float | None:
        if data.test_labels is None:
            return None
        metric = plan.metric
        ids = data.test[self.comp.id]
        joined = data.test_labels.merge(pd.DataFrame({self.comp.id: ids.to_numpy(), "_predicted": predictions}),
                                        on=self.comp.id)
        score = metric.score(joined[self.comp.target].to_numpy(), joined["_predicted"].to_numpy())
        say(f"local test {metric.name}: {score:.5f} (held-back labels of {data.source})")
        return score

    def _log_result(self, result: CVResult, metric: Metric, data: TabularData, name: str, rows: np.ndarray) -> None:
        """``rows``: the training rows the result holds (all, unless the time limit cut the CV)."""
        comp = self.comp
        y, ids = data.train[comp.target][rows], data.train[comp.id][rows]
        tracking.log_metrics({f"cv_{metric.name}": result.score,
                              f"cv_{metric.name}_std": float(np.std(result.fold_scores)),
                              **{f"fold{k}_{metric.name}": s for k, s in enumerate(result.fold_scores)}})
        if result.repeats:
            tracking.log_metrics({f"cv_{metric.name}_repeats_std": float(np.std([r.score for r in result.repeats])),
                                  **{f"repeat{r}_{metric.name}": one.score for r, one in enumerate(result.repeats)}})
        for k, history in enumerate(result.histories):
            if history:
                tracking.log_curves(f"fold{k}_", history)
        oof = result.oof if result.oof.ndim == 1 else np.asarray(metric.classes)[result.oof.argmax(axis=1)]
        tracking.log_frame(pd.DataFrame({ids.name: ids.to_numpy(), "actual": y.to_numpy(), "oof_prediction": oof}),
                           "oof_predictions.csv")
        if pd.api.types.is_numeric_dtype(y) and result.oof.ndim == 1 and metric.classes is None:
            log = comp.target_transform == "log"
            title = f"{name}: out-of-fold {metric.name} {result.score:.4f}"
            tracking.log_figure(plots.predicted_vs_actual(y.to_numpy(), result.oof, log=log, title=title),
                                "predicted_vs_actual.png")
            tracking.log_figure(plots.residuals(y.to_numpy(), result.oof, log=log, title=title), "residuals.png")


def _rows(result: CVResult, rows: np.ndarray) -> CVResult:
    """``result`` on the rows the CV held out (the time limit stopped it before the others)."""
    return dataclasses.replace(result, oof=result.oof[rows], folds=result.folds[rows],
                               repeats=[_rows(one, rows) for one in result.repeats])


def _best_alone(comp: Competition, results: dict[str, CVResult], members: dict[str, dict],
                metric: Metric) -> CVResult:
    """One fold gives no held-out rows to learn weights on: the best member alone."""
    best = (max if metric.greater_is_better else min)(results, key=lambda name: results[name].score)
    say(f"  ensemble: one fold leaves no rows to learn weights on; {best} alone")
    result = dataclasses.replace(results[best], weights={name: float(name == best) for name in results})
    result.final = kfold.build_ensemble(comp, members, {best: 1.0}, 0.0)
    return result


def _probabilities(plan: Plan, metric: Metric) -> bool:
    """Whether the out-of-fold predictions are class probabilities: an ensemble of classifiers
    blends them, and a metric on probabilities scores them."""
    return metric.classes is not None and (plan.model == params.ENSEMBLE or metric.needs_proba)


def _spread(result: CVResult) -> str:
    """`` ± std over N repeats``, the repeats' spread, when there are several."""
    if len(result.repeats) < 2:
        return ""
    each = [one.score for one in result.repeats]
    return f" ± {np.std(each):.5f} over {len(each)} repeats ({', '.join(f'{s:.5f}' for s in each)})"


def _ensemble_repeats(comp: Competition, result: CVResult, members: dict[str, CVResult], y: pd.Series,
                      metric: Metric, proba: bool) -> CVResult:
    """The ensemble's score in each repeat: its weights (learned on the repeats' mean out-of-fold
    predictions) applied to that repeat's out-of-fold predictions; its score, their mean."""
    forward, inverse = kfold.TARGET_TRANSFORMS.get(comp.target_transform, (lambda v: v, lambda v: v))
    weights = [result.weights[name] for name in members]
    intercept = result.final.intercept
    each = []
    for r in range(len(next(iter(members.values())).repeats)):
        stacked = np.stack([members[name].repeats[r].oof for name in members], axis=1)
        oof = (ensembles.combine(stacked, weights) if proba
               else inverse(ensembles.combine(forward(stacked), weights, intercept)))
        each.append(CVResult(oof, [], kfold.score(metric, y.to_numpy(), oof, proba), result.folds))
    return dataclasses.replace(result, score=float(np.mean([one.score for one in each])), repeats=each)


def _without(result: CVResult, y: pd.Series, outliers: np.ndarray, metric: Metric, proba: bool = False) -> float:
    if outliers.any():
        return kfold.score(metric, y.to_numpy()[~outliers], result.oof[~outliers], proba)
    return result.score


def _combine_proba(comp: Competition, results: dict[str, CVResult], members: dict[str, dict], y: pd.Series,
                   metric: Metric, fit_rows: np.ndarray) -> CVResult:
    """Classifiers: the members' OOF probabilities combined with weights on the simplex (so the
    result stays a probability), learned by the metric where it scores probabilities (AUC; log
    loss), else by log loss: ``blend`` or ``select`` (the best member alone), each cross-fitted;
    ``best`` keeps the one whose cross-fitted OOF scores better on the metric, as ``_combine`` does."""
    names, classes = list(results), np.asarray(metric.classes)
    predictions = np.stack([results[name].oof for name in names], axis=1)  # (n, models[, classes])
    index = {c: i for i, c in enumerate(metric.classes)}
    truth, folds = y.to_numpy(), results[names[0]].folds
    target = np.array([index[v] for v in truth])
    loss, by = None, "log_loss"
    if metric.needs_proba and metric.top_k is None and metric.name != "log_loss":  # log loss: the default
        sign, by = (-1.0 if metric.greater_is_better else 1.0), metric.name
        loss = lambda t, p: sign * metric.score(classes[t], p)  # noqa: E731
    methods = list(ensembles.PROBA_METHODS) if comp.ensemble.method == "best" else [comp.ensemble.method]
    candidates, selection = {}, {}
    for method in methods:
        oof = ensembles.cross_fit(predictions, target, folds, partial(ensembles.PROBA_METHODS[method], loss=loss),
                                  fit_rows)
        fold_scores = [kfold.score(metric, truth[folds == k], oof[folds == k], True) for k in np.unique(folds)]
        candidates[method] = CVResult(oof, fold_scores, kfold.score(metric, truth, oof, True), folds)
        selection[method] = kfold.score(metric, truth[fit_rows], oof[fit_rows], True)
        say(f"  ensemble {method}: cv {metric.name} {candidates[method].score:.5f} (weights by {by})")
    method = (max if metric.greater_is_better else min)(candidates, key=selection.get)
    weights, _ = ensembles.PROBA_METHODS[method](predictions[fit_rows], target[fit_rows], loss=loss)
    say(f"  ensemble uses {method}: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights, strict=True)))
    tracking.log_params({"ensemble.method_used": method, "ensemble.intercept": 0.0, "ensemble.weights_by": by})
    result = candidates[method]
    result.weights = {name: float(w) for name, w in zip(names, weights, strict=True)}
    result.final = kfold.build_ensemble(comp, members, result.weights, 0.0)
    return result


def _combine(comp: Competition, results: dict[str, CVResult], members: dict[str, dict], y: pd.Series,
             metric: Metric, fit_rows: np.ndarray) -> CVResult:
    """Blend or stack the members' OOF predictions; pick the method that cross-fits better.

    Like the members, the weights never learn from the outlier rows, and the method is chosen
    by its score without them; the reported scores include them.
    """
    forward, inverse = kfold.TARGET_TRANSFORMS.get(comp.target_transform, (lambda v: v, lambda v: v))
    names = list(results)
    predictions = np.column_stack([forward(results[name].oof) for name in names])
    target, folds = forward(y.to_numpy()), results[names[0]].folds
    methods = list(ensembles.METHODS) if comp.ensemble.method == "best" else [comp.ensemble.method]
    candidates, selection = {}, {}  # selection: scored without the outlier rows, as the weights are fit
    for method in methods:
        oof = inverse(ensembles.cross_fit(predictions, target, folds, method, fit_rows))
        fold_scores = [metric.score(y.to_numpy()[folds == k], oof[folds == k]) for k in np.unique(folds)]
        candidates[method] = CVResult(oof, fold_scores, metric.score(y.to_numpy(), oof), folds)
        selection[method] = metric.score(y.to_numpy()[fit_rows], oof[fit_rows])
        say(f"  ensemble {method}: cv {metric.name} {candidates[method].score:.5f}"
            + (f" ({selection[method]:.5f} without outlier rows)" if not fit_rows.all() else ""))
    better = max if metric.greater_is_better else min
    method = better(candidates, key=selection.get)
    weights, intercept = ensembles.METHODS[method](predictions[fit_rows], target[fit_rows])
    say(f"  ensemble uses {method}: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights, strict=True)))
    tracking.log_params({"ensemble.method_used": method, "ensemble.intercept": round(intercept, 6)})
    result = candidates[method]
    result.weights = {name: float(w) for name, w in zip(names, weights, strict=True)}
    result.final = kfold.build_ensemble(comp, members, result.weights, intercept)
    return result
