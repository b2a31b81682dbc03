"""Blend finished runs: ``python -m pipeline blend RUN_ID RUN_ID ...``.

Each tabular run's model carries its out-of-fold predictions (``models_io.OOF_FILE``: every
training row's prediction from the fold that held it out, the fold, and whether the row may fit
weights). The runs are combined as the ensemble combines its members (``models.ensemble``):
``blend`` (weights on the simplex) or ``stack`` (non-negative weights and an intercept), in the
target's transformed space, or ``select`` (Caruana's greedy selection), scored by cross-fitting
(each fold's rows combined with weights learned on the other folds), ``best`` picking the
better: ``models.ensemble.select``, as a run's own ensemble does. Then the weights, learned on every
row, combine the runs' logged models' predictions of the test file into one submission, checked
and written as ``predict`` writes it. The blend is an MLflow run of its own (``blend-<n>``), with
the weights, the CV score and the submission.

Runs blend when they are of one competition and metric, predict values or probabilities (not
labels), and were cross-validated on the same rows and folds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models import ensemble as ensembles
from models.targets import forward_inverse
from pipeline import models_io, predict, store_checks, tracking
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.metrics import get as get_metric
from pipeline.outputs import check_output

METHODS = ("best", *ensembles.METHODS)


@dataclass
class Blend:
    run_id: str  # the blend's own MLflow run
    method: str
    weights: dict[str, float]  # by run id
    intercept: float
    cv_score: float
    scores: dict[str, float]  # each run's CV score, recomputed from its out-of-fold predictions
    rows: int


def _load(run_id: str, folder: Path):
    uri = f"runs:/{run_id}/{tracking.MODEL}"
    model = tracking.load_model(uri, folder)
    meta = predict.model_metadata(model, uri)
    found = next(folder.rglob(models_io.OOF_FILE), None)
    if found is None or meta.get("output") == "labels":
        raise UserError(f"run {run_id}: its model has no out-of-fold predictions to blend "
                        "(blend takes tabular runs that predict values or probabilities)")
    return model, meta, pd.read_csv(found)


def _check_alike(run_ids: list[str], metas: list[dict], oofs: list[pd.DataFrame]) -> None:
    first, meta0, oof0 = run_ids[0], metas[0], oofs[0]
    for run_id, meta, oof in zip(run_ids[1:], metas[1:], oofs[1:], strict=True):
        for key in ("competition", "metric", "target_transform"):
            if meta.get(key) != meta0.get(key):
                raise UserError(f"runs {first} and {run_id} differ in {key}: {meta0.get(key)!r} and {meta.get(key)!r}")
        same = len(oof) == len(oof0) and all(np.array_equal(oof[c].to_numpy(), oof0[c].to_numpy())
                                             for c in (meta["id"], "actual", "fold"))
        if not same:
            raise UserError(f"runs {first} and {run_id} were cross-validated on different rows or folds")


def blend(run_ids: list[str], *, output: Path, method: str = "best", input_path: Path | None = None,
          data_dir: Path | None = None, sample_path: Path | None = None) -> Blend:
    check_output(Path(output), [input_path, sample_path])
    store_checks.check_reachable(tracking.tracking_uri())
    if len(set(run_ids)) < 2:
        raise UserError("blend needs at least two different runs")
    if method not in METHODS:
        raise UserError(f"unknown blend method {method!r}: use one of {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        loaded = [_load(run_id, Path(tmp) / f"run{k}") for k, run_id in enumerate(run_ids)]
    models, metas, oofs = (list(part) for part in zip(*loaded, strict=True))
    _check_alike(run_ids, metas, oofs)
    meta, metric = metas[0], get_metric(metas[0]["metric"])
    forward, inverse = forward_inverse(meta.get("target_transform"))
    actual, folds = oofs[0]["actual"].to_numpy(), oofs[0]["fold"].to_numpy()
    fit_rows = oofs[0]["fit"].to_numpy(dtype=bool)
    columns = np.column_stack([forward(oof["oof"].to_numpy(dtype=float)) for oof in oofs])
    target = forward(actual.astype(float))
    # Scored on the rows each run scored (its "fit" rows: those the config's outliers rule keeps).
    scores = {run_id: metric.score(actual[fit_rows], oof["oof"].to_numpy()[fit_rows])
              for run_id, oof in zip(run_ids, oofs, strict=True)}

    methods = dict(ensembles.METHODS) if method == "best" else {method: ensembles.METHODS[method]}
    chosen = ensembles.select(columns, actual, folds, methods, metric.score, metric.greater_is_better,
                              fit_rows=fit_rows, target=target, inverse=inverse)
    weights, intercept = chosen.weights, chosen.intercept
    cv_score = chosen.score
    for run_id, weight in zip(run_ids, weights, strict=True):
        say(f"  run {run_id}: cv {metric.name} {scores[run_id]:.5f}, weight {weight:.3f}")
    say(f"blend ({chosen.method}): cv {metric.name} {cv_score:.5f}")
    best = (max if metric.greater_is_better else min)(scores, key=scores.get)
    if (cv_score < scores[best]) if metric.greater_is_better else (cv_score > scores[best]):
        say(f"warning: the blend (cv {metric.name} {cv_score:.5f}) is worse than run {best} alone "
            f"({scores[best]:.5f}): its own submission may score better")

    input_path, sample_path = predict.inputs(meta, input_path, data_dir, sample_path, output)
    frame = predict.read_input(input_path, meta["id"])
    combined = np.full(len(frame), float(intercept))
    for model, weight in zip(models, weights, strict=True):
        if weight > 0:
            combined += weight * forward(predict.score(model, meta, frame, input_path.name).astype(float))
    values = inverse(combined)
    if meta.get("output") == "proba":
        values = np.clip(values, 0.0, 1.0)

    tags = {"competition": meta["competition"], "stage": "blend", "blended_runs": " ".join(run_ids)}
    with tracking.run(meta["competition"], f"blend-{len(run_ids)}", tags=tags) as active:
        rows = predict.write(meta, frame, values, Path(output), sample_path)
        tracking.log_params({"blend.method": chosen.method, "blend.intercept": round(float(intercept), 6),
                             **{f"weight.{run_id}": round(float(w), 4) for run_id, w in zip(run_ids, weights, strict=True)}})
        tracking.log_metrics({f"cv_{metric.name}": cv_score})
        tracking.log_artifact(output)
    say(f"submission: {output} ({rows} rows)")
    return Blend(active.info.run_id, chosen.method, {r: float(w) for r, w in zip(run_ids, weights, strict=True)},
                 float(intercept), cv_score, scores, rows)
