"""The train and submit stages for tabular competitions, each one MLflow run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.training import pick_device
from pipeline import cv, ingest, kaggle_api, metrics, plots, submit, tracking
from pipeline.config import Competition
from pipeline.errors import UserError


@dataclass
class Outcome:
    model: str
    params: dict
    cv_score: float
    fold_scores: list[float]
    metric: str
    run_id: str
    submission: Path | None = None
    local_score: float | None = None


def resolve_task(comp: Competition, data: ingest.TabularData) -> tuple[str, metrics.Metric]:
    task = comp.task or metrics.infer_task(data.train[comp.target])
    sample_targets = [c for c in data.sample.columns if c != comp.id]
    sample_column = data.sample[sample_targets[0]] if sample_targets else None
    return task, metrics.get(comp.metric or metrics.infer_metric(task, sample_column))


def say(message: str) -> None:
    print(message, flush=True)


def run(
    comp: Competition,
    data_dir: Path,
    *,
    model: str | None = None,
    params: dict | None = None,
    output: Path | None = None,
    upload_message: str | None = None,
    progress: bool | None = None,
) -> Outcome:
    """Cross-validate, refit on all rows and, when ``output`` is given, write the submission."""
    started = time.perf_counter()
    data = ingest.load_tabular(comp, data_dir)
    task, metric = resolve_task(comp, data)
    model, params = cv.model_choice(comp, task, model, params or {})
    X = data.train.drop(columns=[comp.target, comp.id])
    y = data.train[comp.target]
    say(f"data: {data.source} ({len(data.train)} train rows, {len(data.test)} test rows)")
    say(f"task: {task}, metric: {metric.name}, model: {model} {params or ''}".rstrip())

    tags = {
        "competition": comp.name,
        "data_source": data.source,
        "git_commit": tracking.git_commit(),
        "device": str(pick_device()),
        "model": model,
        "stage": "submit" if output else "train",
    }
    with tracking.run(comp.name, f"{tags['stage']}-{model}", tags=tags) as active:
        tracking.log_params({**comp.as_params(), "model.name": model, "task": task, "metric": metric.name,
                             **{f"model.params.{k}": v for k, v in params.items()}})
        result = cv.cross_validate(comp, X, y, task=task, metric=metric, model=model, params=params, progress=progress)
        _log_cv(result, metric, y, data.train[comp.id], log_target=comp.target_transform == "log")
        say(f"cv {metric.name}: {result.score:.5f} (folds: {', '.join(f'{s:.4f}' for s in result.fold_scores)})")

        estimator = cv.fit_all(comp, X, y, model=model, params=params)
        tracking.log_pickle(estimator, "pipeline.joblib")
        outcome = Outcome(model, params, result.score, result.fold_scores, metric.name, active.info.run_id)
        if output is not None:
            test_X = data.test.drop(columns=[comp.id])
            predictions = cv.predict(estimator, test_X, metric)
            if not np.isfinite(np.asarray(predictions, dtype=float)).all():
                raise UserError(f"model {model!r} produced NaN or infinite test predictions")
            submission = submit.finalize(
                data.sample, data.test[comp.id], predictions,
                id_column=comp.id, positive=comp.target_transform == "log", path=output,
                labels=task != "regression" and not metric.needs_proba,
            )
            outcome.submission = output
            import mlflow

            mlflow.log_artifact(str(output))
            say(f"submission: {output} ({len(submission)} rows)")
            if data.test_labels is not None:
                outcome.local_score = _local_score(submission, data.test_labels, comp, metric)
                tracking.log_metrics({"local_test_score": outcome.local_score})
                say(f"local test {metric.name}: {outcome.local_score:.5f} (held-back labels of {data.source})")
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


def _log_cv(result: cv.CVResult, metric: metrics.Metric, y: pd.Series, ids: pd.Series, *, log_target: bool) -> None:
    tracking.log_metrics({f"cv_{metric.name}": result.score,
                          f"cv_{metric.name}_std": float(np.std(result.fold_scores)),
                          **{f"fold{k}_{metric.name}": s for k, s in enumerate(result.fold_scores)}})
    for k, history in enumerate(result.histories):
        if history:
            tracking.log_curves(f"fold{k}_", history)
    oof = result.oof if result.oof.ndim == 1 else result.oof.argmax(axis=1)
    tracking.log_frame(pd.DataFrame({ids.name: ids.to_numpy(), "actual": y.to_numpy(), "oof_prediction": oof}),
                       "oof_predictions.csv")
    if pd.api.types.is_numeric_dtype(y) and result.oof.ndim == 1:
        figure = plots.predicted_vs_actual(y.to_numpy(), result.oof, log=log_target,
                                           title=f"out-of-fold {metric.name} {result.score:.4f}")
        tracking.log_figure(figure, "predicted_vs_actual.png")


def _local_score(submission: pd.DataFrame, labels: pd.DataFrame, comp: Competition, metric: metrics.Metric) -> float:
    target = [c for c in submission.columns if c != comp.id][0]
    joined = submission.merge(labels, on=comp.id, suffixes=("_pred", ""))
    return metric.score(joined[target].to_numpy(), joined[f"{target}_pred"].to_numpy())
