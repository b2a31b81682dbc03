"""Permutation importance of a finished tabular run's final model, added to the run:
``python -m pipeline importance RUN --data-dir DIR [--time-limit S]``.

As AutoGluon's ``feature_importance()``, a separate call with a time limit of its own: how much
the out-of-fold score worsens when one input column is shuffled. Each training row is predicted
by the final model's fold models that did not see it (the first shuffle's): for one model, the
unshuffled score is the run's CV score; for an ensemble it is the final weights' on every fold,
a little above the run's cross-fitted score (whose weights were learned on the other folds); for a
stack (``models.stacking``), fold k's level-two model on its members' fold-k models gives its
out-of-fold predictions, and the unshuffled score is its cross-fitted one. Every
column is shuffled once (the boosters' most used first) before any twice; no shuffle starts that
the time limit would not let end, and the columns not reached are left empty and named in one line.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from models.ensemble import FoldBag, PrefitEnsemble
from models.stacking import StackedEnsemble
from models.time_limit import TimeLimit
from pipeline import importance, model_board, processes, tracking
from pipeline.console import say
from pipeline.errors import UserError
from pipeline.metrics import get as get_metric
from pipeline.predict import read_input
from pipeline.tasks import kfold

REPEATS = 3  # shuffles per column


def fold_models(final: PrefitEnsemble, bags: dict[str, int], folds: int, repeats: int) -> list[PrefitEnsemble]:
    """The final ensemble as ``folds`` ensembles, the k-th of each member's first-shuffle fold-k
    models (a member's fold models come shuffle by shuffle, fold by fold, its seeds together)."""
    per_fold = []
    for k in range(folds):
        members = []
        for name, bag in final.members:
            estimators = bag.estimators
            splits = bags.get(name, 1) * repeats * folds
            if len(estimators) % splits:
                raise UserError(f"member {name}: {len(estimators)} fold models do not split into {splits} fits")
            each = len(estimators) // splits
            members.append((name, FoldBag(estimators[k * each:(k + 1) * each])))
        if isinstance(final, StackedEnsemble):  # fold k's level-two model read fold k's level-one predictions
            per_fold.append(StackedEnsemble(members, final.weights, final.intercept, final.target_transform,
                                            final.threshold, level_two=[final.level_two[k]]))
        else:
            per_fold.append(PrefitEnsemble(members, final.weights, final.intercept, final.target_transform,
                                           final.threshold))
    return per_fold


def predict_out_of_fold(models: list[PrefitEnsemble], X: pd.DataFrame, fold: np.ndarray, classes) -> np.ndarray:
    """Each row with ``fold`` k predicted by ``models[k]``: probabilities (P(second class) for
    two), or values; rows of no fold stay 0."""
    out = None
    for k, model in enumerate(models):
        rows = np.flatnonzero(fold == k)
        if classes is None:
            values = np.asarray(model.predict(X.iloc[rows]), dtype=float)
        else:
            values = model.predict_proba(X.iloc[rows])
            values = values[:, 1] if len(classes) == 2 else values
        if out is None:
            out = np.zeros((len(X), *values.shape[1:]))
        out[rows] = values
    return out


def permutation(run_id: str, data_dir: Path, *, limit: TimeLimit, first: dict[str, float] | None = None,
                seed: int = 0) -> pd.DataFrame:
    """Each input column's permutation importance (the mean worsening of the score over
    ``REPEATS`` shuffles, and its spread) for the final model of ``run_id``, within ``limit``
    (its reserve kept for logging the result); ``first``: a score per column, the highest shuffled
    first (the run's gain)."""
    seconds = limit.seconds
    params = tracking.run_params(run_id)
    target, id_column, metric_name = params.get("target"), params.get("id"), params.get("metric")
    if not (target and id_column and metric_name and params.get("cv.folds")):
        raise UserError(f"run {run_id}: not a tabular train or submit run (no target, id, metric and folds)")
    train_path = Path(data_dir) / params.get("train_file", "train.csv")
    if not train_path.is_file():
        raise UserError(f"{train_path}: not found (--data-dir: the run's data folder)")
    with tempfile.TemporaryDirectory() as tmp:
        model = tracking.load_estimator(run_id, Path(tmp))
        oof_path = tracking.download_artifact(run_id, "predictions/oof.csv", Path(tmp))
        if oof_path is None:
            raise UserError(f"run {run_id}: no predictions/oof.csv (the rows' folds)")
        oof = pd.read_csv(oof_path, dtype={id_column: str})
    columns, final = model.steps[0][1], model.steps[-1][1]
    if not isinstance(final, PrefitEnsemble):
        raise UserError(f"run {run_id}: its model was refit on every row; permutation importance needs its fold models")
    board = model_board.of_run(run_id)
    train = read_input(train_path, id_column)
    shuffle0 = oof[oof["repeat"] == 0]
    fold = train[id_column].astype(str).map(dict(zip(shuffle0[id_column], shuffle0["fold"], strict=True)))
    fold = fold.fillna(-1).to_numpy(int)
    X = columns.transform(train.drop(columns=[target]))
    classes = None if params.get("task") == "regression" else np.unique(train[target].to_numpy())
    metric = get_metric(metric_name)
    metric = metric if classes is None else metric.with_classes(classes)
    bags = dict(zip(board["model"], board["bags"].fillna(1).astype(int), strict=True))
    models = fold_models(final, bags, int(params["cv.folds"]), int(params.get("cv.repeats", 1)))
    held, y = fold >= 0, train[target].to_numpy()

    def score(frame: pd.DataFrame) -> float:
        return kfold.score(metric, y[held], predict_out_of_fold(models, frame, fold, classes)[held], classes is not None)

    started = limit.elapsed()
    base = score(X)
    one_pass = limit.elapsed() - started  # what each shuffle will take, about
    sign = 1.0 if metric.greater_is_better else -1.0
    rng = np.random.default_rng(seed)
    order = sorted(X.columns, key=lambda c: -(first or {}).get(c, 0.0))  # the boosters' most used first
    drops: dict[str, list[float]] = {column: [] for column in order}
    for _ in range(REPEATS):  # every column once before any twice: the time limit cuts repeats first
        for column in order:
            if limit.left() <= one_pass:
                break
            shuffled = X.copy()
            shuffled[column] = X[column].to_numpy()[rng.permutation(len(X))]
            drops[column].append(sign * (base - score(shuffled)))
    frame = pd.DataFrame([{"feature": column, "permutation": float(np.mean(d)) if d else math.nan,
                           "permutation_std": float(np.std(d)) if d else math.nan, "permutation_repeats": len(d)}
                          for column, d in drops.items()])
    missed = frame.loc[frame["permutation_repeats"] == 0, "feature"].tolist()
    more = f" (+{len(missed) - 5})" if len(missed) > 5 else ""
    say(f"permutation importance: {len(X.columns) - len(missed)} of {len(X.columns)} columns in "
        f"{limit.elapsed():.0f} s, out-of-fold {metric.name} {base:.5f} on {int(held.sum())} rows"
        + (f"; not reached in {seconds:g} s: {', '.join(map(str, missed[:5]))}{more}" if missed else ""))
    return frame


def add_to_run(run_id: str, data_dir: Path, limit: TimeLimit) -> pd.DataFrame:
    """Permutation importance beside the run's gain importance, logged on the run again."""
    gains = None
    with tempfile.TemporaryDirectory() as tmp:
        earlier = tracking.download_artifact(run_id, importance.ARTIFACT, Path(tmp))
        if earlier is not None and "gain" in (logged := pd.read_csv(earlier)):
            gains = logged[["feature", "gain"]]
    frame = permutation(run_id, data_dir, limit=limit,
                        first=None if gains is None else dict(zip(gains["feature"].astype(str), gains["gain"], strict=True)))
    if gains is not None:
        frame = frame.merge(gains, on="feature", how="outer")
    frame = frame.sort_values("permutation", ascending=False, na_position="last")
    with tracking.reopened(run_id):
        importance.log(frame, f"run {run_id[:8]}: permutation importance on out-of-fold rows")
    return frame


def add_parser(stages) -> None:
    parser = stages.add_parser("importance", help="add the permutation importance of a finished tabular run's "
                                                  "final model (out-of-fold rows) to the run")
    parser.add_argument("run_id", metavar="RUN", help="the run's id (the last lines of train and submit print it)")
    parser.add_argument("--data-dir", type=Path, required=True, help="the run's data folder (its train file)")
    parser.add_argument("--time-limit", type=float, default=120.0, metavar="SECONDS",
                        help="seconds for the whole command, start to end; columns not reached are left empty "
                             "(default 120)")


def _stage_importance(args) -> None:
    # the interpreter's start and the imports count too, as for train and submit
    frame = add_to_run(args.run_id, args.data_dir, TimeLimit.start(args.time_limit, age=processes.age()))
    print(frame.head(20).to_string(index=False))


STAGES = {"importance": _stage_importance}
