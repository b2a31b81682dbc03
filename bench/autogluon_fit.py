"""AutoGluon's side of ``make bench-tabular``: fit on train.csv, write test predictions as the sample.

Runs inside bench/.venv-autogluon (built by ``bench/bench_tabular.py``; AutoGluon tabular with
LightGBM, CatBoost and XGBoost, no torch), not in the project's venv:

    bench/.venv-autogluon/bin/python bench/autogluon_fit.py --data-dir bench/.data/caravan \\
        --target Purchase --id id --metric roc_auc --problem-type binary --time-limit 600 -o out.csv

It fits ``TabularPredictor(label, eval_metric, path).fit(train without the id, time_limit,
presets="medium_quality")`` and writes the predictions in sample_submission.csv's format:
P(positive) for roc_auc, one probability column per class for log_loss, else labels or numbers.
AutoGluon has no RMSLE: for ``--metric rmsle`` it fits log1p(target) under RMSE (the same loss)
and writes expm1 of the predictions.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Our CLI's metric names -> AutoGluon's (rmsle: RMSE of log1p(target)).
METRICS = {
    "rmse": "root_mean_squared_error",
    "rmsle": "root_mean_squared_error",
    "mae": "mean_absolute_error",
    "r2": "r2",
    "roc_auc": "roc_auc",
    "log_loss": "log_loss",
    "accuracy": "accuracy",
    "f1": "f1",
    "macro_f1": "f1_macro",
}


def _key(value) -> str:
    """A class label as text, the same for 1, 1.0 and "1" (sample columns are text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--id", dest="id_column", required=True)
    parser.add_argument("--metric", required=True, choices=sorted(METRICS))
    parser.add_argument("--problem-type", choices=["regression", "binary", "multiclass"])
    parser.add_argument("--positive", help="binary: the positive class (default: the greater label)")
    parser.add_argument("--time-limit", type=float, default=600)
    parser.add_argument("--presets", default="medium_quality")
    parser.add_argument("--path", type=Path, help="AutoGluon's model folder (default: a temp dir)")
    parser.add_argument("--verbosity", type=int, default=1)
    parser.add_argument("--output", "-o", type=Path, required=True)
    args = parser.parse_args(argv)

    from autogluon.tabular import TabularPredictor

    started = time.perf_counter()
    train = pd.read_csv(args.data_dir / "train.csv")
    test = pd.read_csv(args.data_dir / "test.csv")
    sample = pd.read_csv(args.data_dir / "sample_submission.csv")
    train = train.drop(columns=[args.id_column])
    log_target = args.metric == "rmsle"
    if log_target:
        train[args.target] = np.log1p(train[args.target].clip(lower=0))
    options = {}
    if args.problem_type == "binary":
        labels = sorted(train[args.target].dropna().unique().tolist())
        positive = args.positive if args.positive is not None else labels[-1]
        matches = [label for label in labels if _key(label) == _key(positive)]
        options["positive_class"] = matches[0] if matches else positive
    fit_options = {}
    if importlib.util.find_spec("torch") is None:  # the venv has no torch: skip, not fail, its models
        fit_options["excluded_model_types"] = ["NN_TORCH", "FASTAI"]

    with tempfile.TemporaryDirectory(prefix="ag-") as tmp:
        predictor = TabularPredictor(
            label=args.target,
            eval_metric=METRICS[args.metric],
            problem_type=args.problem_type,
            path=str(args.path or Path(tmp) / "ag"),
            verbosity=args.verbosity,
            **options,
        ).fit(train, time_limit=args.time_limit, presets=args.presets, **fit_options)
        features = test.drop(columns=[args.id_column])
        out = sample[[args.id_column]].copy()
        order = test.set_index(args.id_column).index.get_indexer(out[args.id_column])
        if (order < 0).any():
            raise SystemExit("sample_submission.csv has ids that test.csv lacks")
        columns = [c for c in sample.columns if c != args.id_column]
        if args.metric == "roc_auc" or len(columns) > 1:
            proba = predictor.predict_proba(features)
            by_key = {_key(c): c for c in proba.columns}
            if len(columns) > 1:  # one probability column per class, named by the class
                for column in columns:
                    out[column] = proba[by_key[_key(column)]].to_numpy()[order]
            else:
                out[columns[0]] = proba[predictor.positive_class].to_numpy()[order]
        else:
            predicted = predictor.predict(features).to_numpy()[order]
            out[columns[0]] = np.expm1(predicted) if log_target else predicted
        leader = predictor.model_best
        board = predictor.leaderboard(silent=True)
        models = len(board)
        shown = ["model", "score_val", "fit_time", "pred_time_val"]
        print(board[[c for c in shown if c in board.columns]].to_string(index=False))
    out.to_csv(args.output, index=False)
    print(f"autogluon: best {leader} of {models} models, {time.perf_counter() - started:.0f}s, "
          f"wrote {args.output} ({len(out)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
