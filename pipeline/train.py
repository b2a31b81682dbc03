"""The train and submit stages for tabular competitions: one MLflow run each, with a child run
per base model when the model is an ensemble."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from models import ensemble as ensembles
from models.training import pick_device
from pipeline import cv, ingest, kaggle_api, metrics, plots, submit, tracking
from pipeline.config import Competition
from pipeline.errors import UserError


@dataclass
class Outcome:
    model: str
    params: dict
    metric: str
    cv_score: float
    fold_scores: list[float]
    run_id: str
    scores: dict[str, float] = field(default_factory=dict)  # every model's CV score, ensemble included
    scores_without_outliers: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] | None = None
    submission: Path | None = None
    local_score: float | None = None


def resolve_task(comp: Competition, data: ingest.TabularData) -> tuple[str, metrics.Metric]:
    task = comp.task or metrics.infer_task(data.train[comp.target])
    sample_targets = [c for c in data.sample.columns if c != comp.id]
    sample_column = data.sample[sample_targets[0]] if sample_targets else None
    return task, metrics.get(comp.metric or metrics.infer_metric(task, sample_column))


def say(message: str) -> None:
    print(message, flush=True)


def member_params(comp: Competition, model: str, config_params: dict, cli_params: dict, tuned: bool) -> dict[str, dict]:
    """Each model's parameters: config, then the study's best (``tuned``), then the command line's."""
    if model != cv.ENSEMBLE:
        return {model: {**config_params, **(_tuned_params(comp, model) if tuned else {}), **cli_params}}
    if cli_params:
        raise UserError("--param applies to a single model; set ensemble members' params in [ensemble.params.<model>]")
    return {
        name: {**cv.base_params(comp, name), **(_tuned_params(comp, name) if tuned else {})}
        for name in comp.ensemble.models
    }


def run(
    comp: Competition,
    data_dir: Path,
    *,
    model: str | None = None,
    params: dict | None = None,
    output: Path | None = None,
    upload_message: str | None = None,
    progress: bool | None = None,
    tuned: bool = True,
) -> Outcome:
    """Cross-validate, refit on all rows and, when ``output`` is given, write the submission.

    With ``tuned``, a model's parameters start from its Optuna study's best trial, when one exists.
    """
    started = time.perf_counter()
    data = ingest.load_tabular(comp, data_dir)
    task, metric = resolve_task(comp, data)
    model, config_params = cv.model_choice(comp, task, model)
    say(f"data: {data.source} ({len(data.train)} train rows, {len(data.test)} test rows)")
    members = member_params(comp, model, config_params, params or {}, tuned)
    say(f"task: {task}, metric: {metric.name}, model: {model}" + (f" of {', '.join(members)}" if model == cv.ENSEMBLE else f" {members[model] or ''}".rstrip()))
    X = data.train.drop(columns=[comp.target, comp.id])
    y = data.train[comp.target]

    stage = "submit" if output else "train"
    tags = {
        "competition": comp.name,
        "data_source": data.source,
        "git_commit": tracking.git_commit(),
        "device": str(pick_device()),
        "model": model,
        "stage": stage,
    }
    with tracking.run(comp.name, f"{stage}-{model}", tags=tags) as active:
        tracking.log_params({**comp.as_params(), "model.name": model, "task": task, "metric": metric.name,
                             **{f"params.{name}.{k}": v for name, p in members.items() for k, v in p.items()}})
        results = cv.cross_validate_many(comp, X, y, task=task, metric=metric, models=members, progress=progress)
        outliers = cv.outlier_mask(comp, X, y)
        outcome = Outcome(model, members.get(model, {}), metric.name, 0.0, [], active.info.run_id)
        for name, result in results.items():
            _record(outcome, name, result.oof, y, outliers, metric, result.score)
            if len(results) > 1:
                say(f"  {name}: cv {metric.name} {result.score:.5f}"
                    + (f" ({outcome.scores_without_outliers[name]:.5f} without outlier rows)" if comp.outliers else ""))
        if model == cv.ENSEMBLE:
            for name, result in results.items():
                with tracking.run(comp.name, f"{stage}-{name}", tags={**tags, "model": name, "parent_model": model}, nested=True):
                    tracking.log_params({f"params.{k}": v for k, v in members[name].items()})
                    _log_result(result, metric, y, data.train[comp.id], comp, name)
            final, result = _combine(comp, results, members, y, metric, ~outliers)
            outcome.weights = {name: float(w) for (name, _), w in zip(final.estimators, final.weights, strict=True)}
            _record(outcome, model, result.oof, y, outliers, metric, result.score)
            tracking.log_json(outcome.weights, "ensemble_weights.json")
            tracking.log_params({f"weight.{name}": round(w, 4) for name, w in outcome.weights.items()})
        else:
            final, result = cv.create_model(model, members[model]), results[model]
        outcome.cv_score, outcome.fold_scores = result.score, result.fold_scores
        _log_result(result, metric, y, data.train[comp.id], comp, model)
        if len(outcome.scores) > 1:
            tracking.log_figure(plots.model_comparison(outcome.scores, metric.name), "model_comparison.png")
        say(f"cv {metric.name}: {result.score:.5f} (folds: {', '.join(f'{s:.4f}' for s in result.fold_scores)})")
        if comp.outliers:
            say(f"cv {metric.name} without the outlier rows: {outcome.scores_without_outliers[model]:.5f}")

        estimator = cv.fit_all(comp, X, y, final)
        tracking.log_pickle(estimator, "pipeline.joblib")
        if output is not None:
            _submit(comp, data, estimator, task, metric, output, outcome)
        tracking.log_metrics({"wall_seconds": time.perf_counter() - started})
        say(f"mlflow run {active.info.run_id} in {tracking.tracking_uri()} (make ui to browse)")

    if upload_message is not None and output is not None:
        if not comp.kaggle:
            raise UserError(f"competition {comp.name!r} has no Kaggle id to upload to")
        if not kaggle_api.has_credentials():
            raise UserError(f"no Kaggle credentials found: not uploaded, the submission is kept at {output}")
        kaggle_api.upload(output, comp.kaggle, upload_message)
        say(f"uploaded {output} to {comp.kaggle}")
    return outcome


def _combine(comp: Competition, results: dict[str, cv.CVResult], members: dict[str, dict], y: pd.Series, metric,
             fit_rows: np.ndarray):
    """Blend or stack the base models' OOF predictions; pick the method that cross-fits better.

    Like the base models, the weights never learn from the outlier rows, and the method is chosen
    by its score without them; the reported scores include them.
    """
    forward, inverse = cv.TARGET_TRANSFORMS.get(comp.target_transform, (lambda v: v, lambda v: v))
    names = list(results)
    predictions = np.column_stack([forward(results[name].oof) for name in names])
    target, folds = forward(y.to_numpy()), results[names[0]].folds
    methods = list(ensembles.METHODS) if comp.ensemble.method == "best" else [comp.ensemble.method]
    candidates, selection = {}, {}  # selection: scored without the outlier rows, as the weights are fit
    for method in methods:
        oof = inverse(ensembles.cross_fit(predictions, target, folds, method, fit_rows))
        fold_scores = [metric.score(y.to_numpy()[folds == k], oof[folds == k]) for k in np.unique(folds)]
        candidates[method] = cv.CVResult(oof, fold_scores, metric.score(y.to_numpy(), oof), folds)
        selection[method] = metric.score(y.to_numpy()[fit_rows], oof[fit_rows])
        say(f"  ensemble {method}: cv {metric.name} {candidates[method].score:.5f}"
            + (f" ({selection[method]:.5f} without outlier rows)" if not fit_rows.all() else ""))
    better = max if metric.greater_is_better else min
    method = better(candidates, key=selection.get)
    weights, intercept = ensembles.METHODS[method](predictions[fit_rows], target[fit_rows])
    say(f"  ensemble uses {method}: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights, strict=True)))
    tracking.log_params({"ensemble.method_used": method, "ensemble.intercept": round(intercept, 6)})
    return cv.build_ensemble(comp, members, dict(zip(names, weights, strict=True)), intercept), candidates[method]


def _record(outcome: Outcome, name: str, oof: np.ndarray, y: pd.Series, outliers: np.ndarray, metric, score: float):
    outcome.scores[name] = score
    if outliers.any() and oof.ndim == 1:
        outcome.scores_without_outliers[name] = metric.score(y.to_numpy()[~outliers], oof[~outliers])
    else:
        outcome.scores_without_outliers[name] = score


def _submit(comp, data, estimator, task, metric, output: Path, outcome: Outcome) -> None:
    predictions = cv.predict(estimator, data.test.drop(columns=[comp.id]), metric)
    numeric = np.issubdtype(np.asarray(predictions).dtype, np.number)  # labels may be text
    if numeric and not np.isfinite(np.asarray(predictions, dtype=float)).all():
        raise UserError(f"model {outcome.model!r} produced NaN or infinite test predictions")
    submission = submit.finalize(
        data.sample, data.test[comp.id], predictions,
        id_column=comp.id, positive=comp.target_transform == "log", path=output,
        labels=task != "regression" and not metric.needs_proba,
    )
    outcome.submission = output
    mlflow.log_artifact(str(output))
    say(f"submission: {output} ({len(submission)} rows)")
    if data.test_labels is not None:
        outcome.local_score = _local_score(submission, data.test_labels, comp, metric)
        tracking.log_metrics({"local_test_score": outcome.local_score})
        say(f"local test {metric.name}: {outcome.local_score:.5f} (held-back labels of {data.source})")


def _tuned_params(comp: Competition, model: str) -> dict:
    from pipeline import tune

    best = tune.best_params(comp, model)
    if best is None:
        return {}
    say(f"params: {model} uses the best trial of its Optuna study (PARAMS=default ignores it)")
    return best


def _log_result(result: cv.CVResult, metric: metrics.Metric, y: pd.Series, ids: pd.Series, comp: Competition, name: str) -> None:
    tracking.log_metrics({f"cv_{metric.name}": result.score,
                          f"cv_{metric.name}_std": float(np.std(result.fold_scores)),
                          **{f"fold{k}_{metric.name}": s for k, s in enumerate(result.fold_scores)}})
    for k, history in enumerate(result.histories):
        if history:
            tracking.log_curves(f"fold{k}_", history)
    oof = result.oof if result.oof.ndim == 1 else result.oof.argmax(axis=1)
    tracking.log_frame(pd.DataFrame({ids.name: ids.to_numpy(), "actual": y.to_numpy(), "oof_prediction": oof}),
                       "oof_predictions.csv")
    if pd.api.types.is_numeric_dtype(y) and result.oof.ndim == 1 and not metric.needs_proba:
        log = comp.target_transform == "log"
        title = f"{name}: out-of-fold {metric.name} {result.score:.4f}"
        tracking.log_figure(plots.predicted_vs_actual(y.to_numpy(), result.oof, log=log, title=title),
                            "predicted_vs_actual.png")
        tracking.log_figure(plots.residuals(y.to_numpy(), result.oof, log=log, title=title), "residuals.png")


def _local_score(submission: pd.DataFrame, labels: pd.DataFrame, comp: Competition, metric: metrics.Metric) -> float:
    target = [c for c in submission.columns if c != comp.id][0]
    joined = submission.merge(labels, on=comp.id, suffixes=("_pred", ""))
    return metric.score(joined[target].to_numpy(), joined[f"{target}_pred"].to_numpy())
