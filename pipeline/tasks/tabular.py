"""Tabular competitions: train.csv, test.csv and sample_submission.csv.

Every run is a portfolio (``pipeline.tasks.portfolio``): the default one of
``pipeline/portfolios/tabular.toml`` when no model is named, the config's ``[ensemble] models``,
or the one model named. Each member runs k-fold with the features fit inside each training fold,
keeps its out-of-fold and test predictions, and writes one MLflow child run; the members'
weights are selected on the out-of-fold predictions, cross-fitted. The final model is the
selected members' fold models, averaged (bagging), unless the config asks for a refit on every
row (``[ensemble] refit``); it is logged as the run's MLflow model (``pipeline.models_io``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from features import roles
from features.rules import RowRule
from models import ensemble as ensembles
from models.time_limit import MIN_FIT_SECONDS, TimeLimit
from models.training import pick_device
from pipeline import models_io, params, plots, run_report, shift, submission, tracking
from pipeline import predictions as predictions_io
from pipeline import progress as progress_bars
from pipeline.console import say
from pipeline.data import checks
from pipeline.data import tabular as files
from pipeline.data.tabular import TabularData
from pipeline.errors import OutOfTime, UserError
from pipeline.metrics import Metric, infer_metric, infer_task
from pipeline.metrics import get as get_metric
from pipeline.tasks import configuration, kfold, portfolio, results, stack
from pipeline.tasks.base import CVResult, EpochCallback, FileTask, FoldCallback, Plan

PORTFOLIO = "portfolio"  # the model when none is named: pipeline/portfolios/tabular.toml


class TabularTask(FileTask):
    files = files
    registry_kind = "tabular"
    progress_unit = "fold"

    def load(self, data_dir: Path) -> TabularData:
        data = super().load(data_dir)
        # bad-input: the config's columns against the files, before any work (pipeline/data/checks.py)
        checks.check_config_columns(self.comp, data.train, self.comp.train_file)
        checks.check_features_left(self.comp, data.train, self.comp.train_file)
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
        metric = get_metric(comp.metric or infer_metric(task, data.sample[sample_targets] if sample_targets else None,
                                                        data.train[comp.target]))
        metric = submission.one_label_per_row(metric, data.sample, sample_targets)
        if task != "regression":  # the column order of predict_proba, for scores and submissions
            metric = metric.with_classes(np.unique(data.train[comp.target].to_numpy()))
        if len(sample_targets) > 1:  # a probability column per class: each must map, before any work
            submission.class_columns(sample_targets, metric.classes or (), comp.target)
        # bad-input: task, metric and folds against the files, before any work (pipeline/data/checks.py)
        checks.check_plan(comp, data.train, sample_targets, task, metric,
                          (comp.train_file, comp.sample_submission_file))
        return task, metric

    def plan(self, data: TabularData, *, model: str | None = None, cli_params: dict | None = None,
             tuned: bool = True, study_params: dict | None = None, time_limit: TimeLimit | None = None,
             resume: bool = True, drop_shifted: int = 0) -> Plan:
        """What the run fits, every parameter resolved and checked; nothing on ``self`` changes."""
        if drop_shifted:  # before any work: K must leave a column
            shift.check_drop(data, id_column=self.comp.id, target=self.comp.target, drop=drop_shifted)
        task, metric = self._task_and_metric(data)
        comp = self.comp
        if metric.name == "rmsle" and comp.target_transform is None and (data.train[comp.target] >= 0).all():
            say("target: models learn log(1 + target), as RMSLE scores it; predictions are exp'd back")
            comp = dataclasses.replace(comp, target_transform="log1p")
        chosen = model or comp.model.name
        configs = configuration.load(task, metric.name)
        if chosen is None and not comp.ensemble.models:
            if cli_params:
                raise UserError("--param applies to a single model (MODEL=<name>); the portfolio's are in "
                                "pipeline/portfolios/tabular.toml")
            name, method = PORTFOLIO, "select"
        elif (named := {c.name: c for c in configs}.get(chosen)) is not None:
            # A portfolio configuration by its name: what the portfolio fits, alone (make tune MODEL=lightgbm_large).
            configs, name, method = (named,), named.name, "select"
        else:
            name = params.choose_model(comp, self.registry_kind, task, params.ENSEMBLE, chosen, ensembles=True)
            members = comp.ensemble.models if name == params.ENSEMBLE else (name,)
            configs = tuple(configuration.Configuration(member, member) for member in members)
            method = comp.ensemble.method if name == params.ENSEMBLE else "select"
        if name == params.ENSEMBLE and cli_params:
            raise UserError("--param applies to a single model; set ensemble members' params in [ensemble.params.<model>]")
        for c in configs:
            params.check_model(c.model, self.registry_kind, task)
        alone = len(configs) == 1
        resolved = {c.name: params.resolve(comp, c.model, tuned=tuned, portfolio=dict(c.params), config_name=c.name,
                                           metric=metric.name, study=study_params if alone else None,
                                           cli=cli_params if alone else None) for c in configs}
        models = {c.name: c.model for c in configs}
        costs = {c.name: c.cost for c in configs}
        for member, values in resolved.items():
            params.check(models[member], self.registry_kind, values)
        time_limit = time_limit or TimeLimit(comp.time_limit)
        needed = MIN_FIT_SECONDS * comp.cv.folds * comp.cv.repeats  # one configuration's fits
        if time_limit.limited and time_limit.left() < needed:
            repeats = (f", and {comp.cv.repeats} repeats of {comp.cv.folds} folds need {needed:g} s at least"
                       if comp.cv.repeats > 1 else "")
            raise UserError(f"time limit {time_limit.seconds:g} s: {time_limit.elapsed():.0f} s went on start-up and "
                            f"reading the files, {time_limit.left():.0f} s are left for work{repeats}; give the run "
                            f"more time{' or fewer --repeats' if repeats else ''}")
        return Plan(task, metric, name, {m: v.values for m, v in resolved.items()}, comp=comp,
                    time_limit=time_limit, sources={m: v.sources for m, v in resolved.items()},
                    models=models, costs=costs, method=method,
                    study_keys={c.name: params.study_key(c.model, c.name, dict(c.params)) for c in configs},
                    resume=resume, drop_shifted=drop_shifted)

    def tuned_by_default(self, data: TabularData) -> tuple[str, ...]:
        if self.comp.model.name or self.comp.ensemble.models:
            return ()  # the config's model, or its ensemble's members one study each
        return configuration.tuned_by_default(self._task_and_metric(data)[0])

    def untuned_params(self, plan: Plan) -> dict:
        return dict(plan.params)

    def describe(self, data: TabularData, plan: Plan) -> list[str]:
        many = plan.model in (params.ENSEMBLE, PORTFOLIO)
        model = plan.model + (f" of {', '.join(plan.members)}" if many else f" {plan.members.get(plan.model, {}) or ''}".rstrip())
        limit = f", time limit {plan.time_limit.seconds:g} s" if plan.time_limit.limited else ""
        return [f"data: {data.source} ({len(data.train)} train rows, {len(data.test)} test rows)",
                f"task: {plan.task}, metric: {plan.metric.name}{'' if self.comp.metric else ' (inferred)'}, "
                f"model: {model}{limit}",
                f"columns: {self.roles_summary(data)}"]

    def roles_summary(self, data: TabularData) -> str:
        """The columns' roles on every training row, in one line (each fold infers its own)."""
        found = roles.infer_roles(self._xy(data)[0], **kfold.role_options(self.comp))
        return roles.summary(found, self.comp.id)

    def tags(self, data: TabularData, plan: Plan) -> dict[str, str]:
        return {"device": str(pick_device())}

    def run_params(self, data: TabularData, plan: Plan) -> dict:
        return {"model.name": plan.model, "task": plan.task, "metric": plan.metric.name, "weights.method": plan.method,
                "columns.roles": self.roles_summary(data)[:6000], "cv.folds": plan.folds, "cv.repeats": plan.repeats,
                "cv.seed": plan.comp.cv.seed, "cv.seeds": plan.comp.cv.seeds,
                **{f"params.{name}.{k}": v for name, values in plan.members.items() for k, v in values.items()},
                **{f"param_sources.{name}": ", ".join(f"{k}: {source}" for k, source in given.items())
                   for name, given in plan.sources.items() if given}}

    def _xy(self, data: TabularData) -> tuple[pd.DataFrame, pd.Series]:
        return data.train.drop(columns=[self.comp.target, self.comp.id]), data.train[self.comp.target]

    def cross_validate(self, data: TabularData, plan: Plan, *, on_fold: FoldCallback | None = None,
                       on_epoch: EpochCallback | None = None, progress: bool | None = False) -> CVResult:
        """A single configuration's CV through the one loop (``Portfolio.fit``), on the folds,
        fold features, seeds and scored rows that ``submit`` fits: what a tuning trial scores.
        Under a time limit (the study's), a model that stops itself may run until the limit
        but is not given a share of it, so that a trial scores what ``submit`` fits untimed."""
        if len(plan.members) > 1 or plan.model == PORTFOLIO:
            raise UserError("an ensemble is cross-validated through its members")
        run = self._portfolio(data, plan, shares=False)
        one = run.fit(run.configs[0], on_fold=on_fold)
        if one is None:
            raise OutOfTime(f"time limit: {plan.model} could not finish its folds")
        return results.of_configuration(one, (lambda v: v) if run.proba else run.inverse, run)

    def _portfolio(self, data: TabularData, plan: Plan, *, shares: bool = True) -> portfolio.Portfolio:
        X, y = self._xy(data)
        proba = plan.metric.classes is not None  # classifiers combine probabilities
        configs = tuple(configuration.Configuration(name, plan.models.get(name, name), values, plan.costs.get(name, 1.0))
                        for name, values in plan.members.items())
        return portfolio.Portfolio(plan.comp, X, y, len(data.test), task=plan.task, metric=plan.metric,
                                   configs=configs, methods=_methods(plan.method, proba), time_limit=plan.time_limit,
                                   proba=proba, seeds=plan.comp.cv.seeds, time_shares=shares)

    def check_shift(self, data: TabularData, plan: Plan) -> TabularData:
        limit = plan.time_limit.within(None) if plan.time_limit.limited else None
        return shift.check(data, id_column=self.comp.id, target=self.comp.target, drop=plan.drop_shifted,
                           seed=self.comp.cv.seed, time_limit=limit)

    def validate(self, data: TabularData, plan: Plan, *, progress: bool | None) -> CVResult:
        comp, metric, limit = plan.comp, plan.metric, plan.time_limit
        X, y = self._xy(data)
        run = self._portfolio(data, plan)
        configs, proba = run.configs, run.proba
        inverse = (lambda v: v) if proba else run.inverse

        def finished(one: configuration.Fitted, selection: ensembles.Selection) -> None:
            clock = f" at {limit.elapsed():.0f} of {limit.seconds:g} s" if limit.limited else ""
            ensemble = f"; ensemble {selection.score:.5f}" if len(configs) > 1 else ""
            if one.bags > 1:  # another bag of a member: its child run holds the first pass
                say(f"  {one.config.name} x{one.bags} bags: cv {metric.name} {one.score:.5f} "
                    f"in {one.seconds + one.bag_seconds:.0f} s{ensemble}{clock}")
                return
            spread = (f" ± {np.std(one.seed_scores):.5f} over {len(one.seeds)} seeds ({one.seeds[0]} to {one.seeds[-1]})"
                      if one.seeds else "")
            say(f"  {one.config.name}: cv {metric.name} {one.score:.5f}{spread} in {one.seconds:.0f} s{ensemble}{clock}")
            if len(configs) > 1:
                with tracking.child_run(one.config.name, tags={"model": one.config.model, "configuration": one.config.name,
                                                                     "parent_model": plan.model}):
                    tracking.log_params({f"params.{k}": v for k, v in plan.members.get(one.config.name, {}).items()})
                    tracking.log_metrics({"seconds": one.seconds, **({f"cv_{metric.name}_seeds_std": float(
                        np.std(one.seed_scores))} if one.seed_scores else {})})
                    if one.seeds:
                        tracking.log_params({"seeds": " ".join(map(str, one.seeds))})
                    self._log_result(results.of_configuration(one, inverse, run), metric, data, one.config.name, plots_too=False)

        stacks = comp.ensemble.stack and len(configs) > 1 and not comp.ensemble.refit
        if stacks and limit.limited:
            run.reserved = stack.RESERVE * limit.left()
        bar = progress_bars.PortfolioBar(len(configs), limit, progress_bars.enabled(progress))
        run.on_progress = bar.fold
        try:
            outcome = run.run(finished)
        finally:
            bar.close()
        if limit.limited and outcome.finished:
            say(f"portfolio finished at {limit.elapsed():.0f} s of {limit.seconds:g}")
        stacked = stack.level_two(run, outcome) if stacks else None
        if stacked is not None:
            say(f"  {stack.NAME}: cv {metric.name} {stacked.score:.5f} in {stacked.seconds:.0f} s; {stacked.reason}")
            tracking.log_params({"stack.used": stacked.used, "stack.reason": stacked.reason})
            tracking.log_metrics({f"stack_cv_{metric.name}": stacked.score})
        if stacks and limit.limited and not (stacked and stacked.used):
            outcome = stack.rest_to_bags(run, outcome, finished)
        result = results.of_outcome(outcome, inverse, metric, run, comp.target_transform, proba)
        result.scores = {f.config.name: f.score for f in outcome.fitted}
        if stacked is not None:
            result.scores[stack.NAME] = stacked.score
            if stacked.used:
                result = stack.applied(result, stacked, outcome, run, comp.target_transform)
        if len(configs) > 1:
            result.scores[plan.model] = result.score
            say(f"  ensemble ({outcome.selection.method}): " + ", ".join(
                f"{n} {w:.3f}" for n, w in result.weights.items()))
            tracking.log_json(result.weights, "ensemble_weights.json")
            tracking.log_params({"ensemble.method_used": outcome.selection.method,
                                 "ensemble.intercept": round(outcome.selection.intercept, 6),
                                 **{f"weight.{n}": round(w, 4) for n, w in result.weights.items()}})
            tracking.log_figure(plots.model_comparison(result.scores, metric.name, final=plan.model),
                                "model_comparison.png")
        if run.scored.all():
            result.scores_with_outliers = {}
        else:  # the second figure, under its own name: every covered row, the outliers back in
            every = {f.config.name: run.score_on(f.oof, f.covered) for f in outcome.fitted}
            if len(configs) > 1:
                every[plan.model] = kfold.score(metric, run.y_true, result.oof, proba)
            result.scores_with_outliers = every
        if run.decides:
            tracking.log_params({"decision_threshold": result.fitted.threshold})
            say(f"decision threshold: P({metric.classes[1]}) > {result.fitted.threshold:.2f} is {metric.classes[1]} "
                f"(best {metric.name} out of fold; each fold's score with the threshold of the others)")
        if outcome.skipped:
            tracking.log_params({"portfolio.skipped": ", ".join(outcome.skipped)[:6000]})
        self._log_result(result, metric, data, plan.model)
        result.leaderboard = run_report.log_portfolio(outcome, result, plan, len(data.test),
                                                      [stack.board_row(stacked, len(data.test))] if stacked else [])
        members = {f.config.name: [inverse(oof) for oof in f.repeat_oofs] for f in outcome.fitted}
        if len(configs) > 1:
            members[plan.model] = [r.oof for r in result.repeats] or [result.oof]
        predictions_io.log_oof(data.train[comp.id], y, run.repeat_folds, members, metric.classes if proba else None)
        say(f"cv {metric.name}: {result.score:.5f}{_spread(result)} "
            f"(folds: {', '.join(f'{s:.4f}' for s in result.fold_scores)})")
        if (result.folds < 0).any():
            say(f"cv {metric.name} covers {result.rows} of {len(y)} rows: the time limit cut {configs[0].name} after "
                f"{len(result.fold_scores)} of {plan.folds} folds (its fold models are the model; a run on every fold "
                "keeps @champion)")
        if result.scores_with_outliers:
            with_outliers = result.scores_with_outliers[plan.model]
            tracking.log_metrics({f"cv_{metric.name}_with_outliers": with_outliers})
            say(f"cv {metric.name}_with_outliers: {with_outliers:.5f} (the {int((~run.scored).sum())} rows of the "
                "outliers rule back in; they train no fold and count in no other figure)")
        return result

    def refit(self, data: TabularData, plan: Plan, result: CVResult, *, progress: bool | None = None):
        """The fold models, averaged (already fit); with ``[ensemble] refit``, each selected member
        fit again on every training row, where the time left allows it."""
        comp = plan.comp
        X, y = self._xy(data)
        estimator = result.fitted
        if comp.ensemble.refit:
            needed = sum(f.seconds / len(f.fold_scores) * comp.cv.folds / max(comp.cv.folds - 1, 1)
                         for f in result.members if result.weights.get(f.config.name, 0) > 0)
            if plan.time_limit.fits(needed + sum(f.last_phase_seconds for f in result.members)):
                members = [(f.config.name, ensembles.FoldBag([kfold.fit_all(comp, X, y, f.config.build(),
                                                                            f.config.encoding, f.config.crafted,
                                                                            transform=False)]))
                    for f in result.members if result.weights.get(f.config.name, 0) > 0]
                weights = [result.weights[name] for name, _ in members]
                estimator = ensembles.PrefitEnsemble(members, weights, estimator.intercept, comp.target_transform,
                                                     estimator.threshold)
            else:
                say(f"refit: skipped (about {needed:.0f} s, {plan.time_limit.left():.0f} s left); the fold models predict")
        models_io.log_tabular(comp, data.train, plan, estimator, result, ~kfold.outlier_mask(comp, X, y))
        return estimator

    def predict(self, fitted, data: TabularData, plan: Plan) -> np.ndarray:
        """The final model's predictions of the test set, in the submission's form; each kept
        member's go to ``predictions/test.csv`` from the same pass over the rows."""
        sample, metric = data.sample, plan.metric
        per_class = len(submission.sample_targets(sample, self.comp.id)) > 1
        wants_proba = submission.wants_probabilities(sample, self.comp.id, metric)
        proba = metric.classes is not None
        by_member, combined = predictions_io.member_predictions(
            fitted, data.test.drop(columns=[self.comp.id]), plan.model, plan.comp.target_transform)
        predictions_io.log_test(data.test[self.comp.id], by_member, metric.classes if proba else None)
        if proba:
            combined = kfold.shaped(combined, fitted.classes_, metric, per_class=per_class)
            predictions = combined if wants_proba else kfold.as_labels(combined, metric, fitted.threshold)
        else:
            predictions = combined
        submission.check_finite(predictions, plan.model, "test")
        return predictions

    def submission(self, data: TabularData, plan: Plan, predictions: np.ndarray, path: Path) -> int:
        frame = submission.finalize(
            data.sample, data.test[self.comp.id], predictions,
            id_column=self.comp.id, positive=plan.comp.target_transform == "log", path=path,
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

    def _log_result(self, result: CVResult, metric: Metric, data: TabularData, name: str, *,
                    plots_too: bool = True) -> None:
        comp = self.comp
        y, ids = data.train[comp.target], data.train[comp.id]
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
        if plots_too and pd.api.types.is_numeric_dtype(y) and result.oof.ndim == 1 and metric.classes is None:
            log = comp.target_transform == "log"
            title = f"{name}: out-of-fold {metric.name} {result.score:.4f}"
            tracking.log_figure(plots.predicted_vs_actual(y.to_numpy(), result.oof, log=log, title=title),
                                "predicted_vs_actual.png")
            tracking.log_figure(plots.residuals(y.to_numpy(), result.oof, log=log, title=title), "residuals.png")
        elif plots_too and metric.classes is not None and result.oof.dtype.kind == "f":
            run_report.log_classification_figures(y, result.oof, metric.classes, f"{name}: out-of-fold")



def _methods(method: str, proba: bool) -> dict:
    """The ways of learning the members' weights that the run compares (cross-fitted)."""
    table = ensembles.PROBA_METHODS if proba else ensembles.METHODS
    if method == "best":
        return dict(table)
    if method not in table:
        raise UserError(f"[ensemble] method {method!r} does not combine {'probabilities' if proba else 'values'}: "
                        f"use {', '.join(['best', *table])}")
    return {method: table[method]}


def _spread(result: CVResult) -> str:
    """`` ± std over N repeats``, the repeats' spread, when there are several."""
    if len(result.repeats) < 2:
        return ""
    each = [one.score for one in result.repeats]
    return f" ± {np.std(each):.5f} over {len(each)} repeats ({', '.join(f'{s:.5f}' for s in each)})"
