"""Gradient-boosting libraries against scikit-learn's HistGradientBoosting, on the tabular suite.

Runs in the AutoGluon venv (LightGBM, XGBoost, CatBoost, scikit-learn; no torch; built by
``bench/bench_tabular.py``), with the repo root on ``sys.path`` for our ``features`` package (it
imports neither ``pipeline`` nor ``models``); the suite's data first
(``.venv/bin/python bench/tabular_suite.py``)::

    nice -n 10 bench/.venv-autogluon/bin/python bench/gbm_libraries.py [--tasks a b] [--models ...]

For each suite task (``bench/tabular_suite.py``, data under ``bench/.data/<task>/``): k-fold CV on
``train.csv`` (stratified for classification; 5 folds, ``--large-folds`` for 250k rows and more),
the features fit on each training fold, every library fit on the same fold matrix, and scored
out of fold with the task's metric (probabilities for roc_auc and log_loss). Fit seconds are
summed over folds.

Rows (``--models``):

- ``hgb``: HistGradientBoosting{Regressor,Classifier}, early stopping on its 10% internal split
  (``n_iter_no_change=20``), as the registry's ``hist_gbm`` does;
- ``lightgbm``, ``xgboost`` (``tree_method="hist"``), ``catboost``: defaults, but the same
  learning rate (0.05), the same ceiling on rounds (2000), and early stopping (20 rounds) on a 10%
  split of the training fold (never the validation fold), 2 threads each (HistGradientBoosting's
  OpenMP pool held to 2 as well);

all four on the pipeline's matrix (``ColumnRoles`` then ``TabularPreprocessor``, as
``pipeline/tasks/kfold.py`` ``build_features`` chains them: one-hot categories, standardised
numbers). ``hgb_native``, ``lightgbm_native``, ``xgboost_native`` and ``catboost_native`` get
``ColumnRoles``' output with the categories left as categories for the library's own handling
(numbers unimputed): a pandas ``category`` dtype, many-level columns frequency and target encoded
as in the pipeline; for CatBoost, strings in ``cat_features``, many-level columns raw included
(see :class:`NativeFeatures`).

Within a fold the libraries run one after another, so a slow spell of a shared machine hits them
alike; CPU seconds are reported beside wall seconds. Prints a task x library table (score, fit
seconds) and a verdict line per task. Results go to ``bench/.results/gbm_libraries.json``, written
after every task (``--resume`` keeps the rows already there and runs the missing ones; ``--redo``
runs named rows again).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as models/threads.py: before OpenMP loads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from features.roles import ColumnRoles  # noqa: E402
from features.tabular import MISSING_CATEGORY, TabularPreprocessor, category_label  # noqa: E402

RESULTS = ROOT / "bench" / ".results" / "gbm_libraries.json"
LEARNING_RATE = 0.05
MAX_ROUNDS = 2000
PATIENCE = 20
HOLDOUT = 0.1
THREADS = 2
SEED = 0
LARGE = 250_000  # rows from which --large-folds applies
ALL_MODELS = ("hgb", "lightgbm", "xgboost", "catboost", "hgb_native", "lightgbm_native", "xgboost_native",
              "catboost_native")
DEFAULT_MODELS = ALL_MODELS


# --- tasks and metrics ------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    target: str
    id: str | None
    metric: str
    kind: str  # regression, binary, multiclass
    classes: tuple  # class order (the positive class last for f1); empty: sorted
    directory: Path


@dataclass(frozen=True)
class Scorer:
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    needs_proba: bool = False


def _positive(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 1e-9, None)


SCORERS = {
    "rmse": Scorer(skm.root_mean_squared_error, False),
    "mae": Scorer(skm.mean_absolute_error, False),
    "r2": Scorer(skm.r2_score, True),
    "rmsle": Scorer(lambda t, p: skm.root_mean_squared_log_error(t, np.clip(p, 0, None)), False),
    "log_rmse": Scorer(lambda t, p: skm.root_mean_squared_error(np.log(t), np.log(_positive(p))), False),
    "accuracy": Scorer(skm.accuracy_score, True),
    "f1": Scorer(skm.f1_score, True),
    "macro_f1": Scorer(lambda t, p: skm.f1_score(t, p, average="macro"), True),
    "roc_auc": Scorer(lambda t, p: skm.roc_auc_score(t, p, multi_class="ovr") if p.ndim == 2
                      else skm.roc_auc_score(t, p), True, needs_proba=True),
    "log_loss": Scorer(skm.log_loss, False, needs_proba=True),
}
ALIASES = {"auc": "roc_auc", "logloss": "log_loss", "f1_macro": "macro_f1", "msle": "rmsle"}


def scorer(name: str) -> Scorer:
    key = name.strip().lower()
    return SCORERS[ALIASES.get(key, key)]


def suite_tasks() -> list[Task]:
    """Every task of ``bench/tabular_suite.py`` (which builds them: ``.venv/bin/python
    bench/tabular_suite.py``)."""
    import tabular_suite as suite

    return [Task(t.name, t.target, t.id, t.metric, t.kind, tuple(t.classes), suite.DATA / t.name)
            for t in suite.TASKS.values()]


# --- the two fold matrices --------------------------------------------------------------------


def pipeline_features() -> Pipeline:
    """``build_features`` for a config with no feature steps and no role overrides."""
    return Pipeline([("roles", ColumnRoles()), ("preprocess", TabularPreprocessor())])


def _column_roles(**params) -> ColumnRoles:
    """``ColumnRoles`` without the one-hot width budget where it has one: native categories are
    not one-hot encoded, so no category moves to frequency and target encoding for width."""
    if "max_onehot_width" in inspect.signature(ColumnRoles).parameters:
        params["max_onehot_width"] = None
    return ColumnRoles(**params)


class NativeFeatures:
    """``ColumnRoles``' output with the category and number-code columns kept as categories, for a
    library's own categorical handling; numbers stay as they are, NaN included.

    ``raw_high``: the CatBoost frame, its categories as strings (``cat_features``), and the raw text
    of the many-level columns in place of their frequency and target encoding (its ordered target
    statistics are the selling point). Otherwise a pandas ``category`` dtype with the training
    fold's levels (a level the fold lacks becomes missing), and the many-level columns frequency and
    target encoded as the pipeline does (raw, LightGBM and XGBoost overfit a 4,000-level ``tailnum``,
    and HistGradientBoosting takes at most 255 levels)."""

    def __init__(self, raw_high: bool):
        self.raw_high = raw_high

    def fit_transform(self, X: pd.DataFrame, y) -> pd.DataFrame:
        self.roles = _column_roles(target_encoding=not self.raw_high)
        out = self._frame(X, self.roles.fit_transform(X, y))
        self.levels = {c: sorted(out[c].unique()) for c in self.categorical}
        return self._typed(out)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._typed(self._frame(X, self.roles.transform(X)))

    def _frame(self, X: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
        roles = self.roles.roles_
        high = [c for c, r in roles.items() if r in ("high_card", "over_budget")] if self.raw_high else []
        out = out.drop(columns=[f"{c}_frequency" for c in high], errors="ignore")
        for c in high:
            out[c] = X[c]
        self.categorical = [c for c in out.columns if roles.get(c) in ("category", "category_code", *high)
                            or not (pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c]))]
        for c in self.categorical:
            column = out[c].astype(object)
            out[c] = column.where(column.notna(), MISSING_CATEGORY).map(category_label)
        for c in out.columns.difference(self.categorical):
            out[c] = out[c].astype(float)
        return out

    def _typed(self, out: pd.DataFrame) -> pd.DataFrame:
        if self.raw_high:
            return out.astype({c: object for c in self.categorical})
        for c in self.categorical:  # a level the training fold lacks becomes missing
            known = out[c].where(out[c].isin(self.levels[c]))
            out[c] = pd.Categorical(known, categories=self.levels[c])
        return out


# --- the libraries ----------------------------------------------------------------------------


def _holdout(X, y, classification: bool):
    """90/10 split of the training fold for early stopping (stratified for classification)."""
    stratify = y if classification and np.bincount(y).min() >= 2 else None
    return train_test_split(X, y, test_size=HOLDOUT, random_state=SEED, stratify=stratify)


def fit_hgb(X, y, kind: str, native: bool):
    params = {"learning_rate": LEARNING_RATE, "max_iter": MAX_ROUNDS, "early_stopping": True,
              "validation_fraction": HOLDOUT, "n_iter_no_change": PATIENCE, "random_state": SEED,
              "categorical_features": "from_dtype" if native else None}
    cls = HistGradientBoostingRegressor if kind == "regression" else HistGradientBoostingClassifier
    model = cls(**params).fit(X, y)
    return model, int(model.n_iter_)


def fit_lightgbm(X, y, kind: str, native: bool):
    import lightgbm as lgb

    cls = lgb.LGBMRegressor if kind == "regression" else lgb.LGBMClassifier
    model = cls(n_estimators=MAX_ROUNDS, learning_rate=LEARNING_RATE, n_jobs=THREADS, random_state=SEED,
                verbose=-1)
    X_fit, X_stop, y_fit, y_stop = _holdout(X, y, kind != "regression")
    model.fit(X_fit, y_fit, eval_set=[(X_stop, y_stop)],
              callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
    return model, int(model.best_iteration_ or MAX_ROUNDS)


def fit_xgboost(X, y, kind: str, native: bool):
    import xgboost as xgb

    cls = xgb.XGBRegressor if kind == "regression" else xgb.XGBClassifier
    model = cls(n_estimators=MAX_ROUNDS, learning_rate=LEARNING_RATE, tree_method="hist", n_jobs=THREADS,
                early_stopping_rounds=PATIENCE, random_state=SEED, enable_categorical=native)
    X_fit, X_stop, y_fit, y_stop = _holdout(X, y, kind != "regression")
    model.fit(X_fit, y_fit, eval_set=[(X_stop, y_stop)], verbose=False)
    return model, int(model.best_iteration) + 1


def fit_catboost(X, y, kind: str, native: bool):
    import catboost as cb

    cls = cb.CatBoostRegressor if kind == "regression" else cb.CatBoostClassifier
    cat = [c for c in X.columns if X[c].dtype == object or isinstance(X[c].dtype, pd.StringDtype)] \
        if native else None
    model = cls(iterations=MAX_ROUNDS, learning_rate=LEARNING_RATE, thread_count=THREADS, random_seed=SEED,
                early_stopping_rounds=PATIENCE, verbose=0, allow_writing_files=False, cat_features=cat)
    X_fit, X_stop, y_fit, y_stop = _holdout(X, y, kind != "regression")
    model.fit(X_fit, y_fit, eval_set=(X_stop, y_stop))
    return model, int(model.get_best_iteration()) + 1


LIBRARIES = {  # row -> (fit, native matrix, CatBoost's native frame: NativeFeatures(raw_high=True))
    "hgb": (fit_hgb, False, False),
    "lightgbm": (fit_lightgbm, False, False),
    "xgboost": (fit_xgboost, False, False),
    "catboost": (fit_catboost, False, False),
    "lightgbm_native": (fit_lightgbm, True, False),
    "catboost_native": (fit_catboost, True, True),
    "xgboost_native": (fit_xgboost, True, False),
    "hgb_native": (fit_hgb, True, False),
}


def predictions(model, X, kind: str, proba: bool) -> np.ndarray:
    if kind == "regression":
        return np.asarray(model.predict(X), dtype=float).ravel()
    probabilities = np.asarray(model.predict_proba(X), dtype=float)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # XGBoost's float32 rows sum to 1 +- 1e-7
    if not proba:
        return probabilities.argmax(axis=1)
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities


# --- the benchmark ----------------------------------------------------------------------------


def load(task: Task, rows: int | None) -> tuple[pd.DataFrame, np.ndarray, str, list]:
    frame = pd.read_csv(task.directory / "train.csv")
    if rows and len(frame) > rows:
        frame = frame.sample(rows, random_state=SEED).reset_index(drop=True)
    y_raw = frame[task.target]
    X = frame.drop(columns=[c for c in (task.target, task.id) if c and c in frame.columns])
    if task.kind == "regression":
        return X, y_raw.to_numpy(dtype=float), task.kind, []
    classes = [str(c) for c in task.classes] or sorted(y_raw.astype(str).unique())
    codes = {c: i for i, c in enumerate(classes)}
    return X, y_raw.astype(str).map(codes).to_numpy(dtype=int), task.kind, classes


def fold_matrices(X_train, X_valid, y_train, todo: list[str], features_s: dict) -> dict:
    """The pipeline's matrix and the native frame(s) for one fold, fit on its training part."""
    matrices = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TargetEncoder(shuffle=...) on scikit-learn 1.9
        if any(not LIBRARIES[m][1] for m in todo):
            started = time.perf_counter()
            chain = pipeline_features()
            matrices["pipeline"] = (chain.fit_transform(X_train, y_train), chain.transform(X_valid))
            features_s["pipeline"] += time.perf_counter() - started
        for raw_high in sorted({LIBRARIES[m][2] for m in todo if LIBRARIES[m][1]}):
            started = time.perf_counter()
            native = NativeFeatures(raw_high)
            matrices[("native", raw_high)] = (native.fit_transform(X_train, y_train), native.transform(X_valid))
            features_s["native"] += time.perf_counter() - started
    return matrices


def run_task(task: Task, models: list[str], folds: int, rows: int | None, done: dict, save) -> dict:
    """Every library in ``models`` not in ``done``, fold by fold: within a fold they run one after
    the other on the same matrices, so a slow spell of the machine hits all of them alike."""
    X, y, kind, classes = load(task, rows)
    score_with = scorer(task.metric)
    split = (KFold if kind == "regression" else StratifiedKFold)(folds, shuffle=True, random_state=SEED)
    todo = [m for m in models if m not in done]
    oof: dict[str, np.ndarray] = {}
    fold_scores = {m: [] for m in todo}
    fit_s = {m: 0.0 for m in todo}
    cpu_s = {m: 0.0 for m in todo}
    rounds = {m: [] for m in todo}
    errors: dict[str, str] = {}
    features_s = {"pipeline": 0.0, "native": 0.0}
    print(f"\n{task.name}: {len(X)} rows x {X.shape[1]} columns, {kind}, {task.metric}, {folds} folds"
          + (f", {len(classes)} classes" if classes else ""), flush=True)
    for k, (train, valid) in enumerate(split.split(X, y)):
        y_train = y[train]
        matrices = fold_matrices(X.iloc[train], X.iloc[valid], y_train, todo, features_s)
        if k == 0:
            print("  fold matrices: " + ", ".join(f"{'pipeline' if key == 'pipeline' else 'native'} "
                                                  f"{m[0].shape[0]} x {m[0].shape[1]}"
                                                  for key, m in matrices.items()), flush=True)
        for name in todo:
            if name in errors:
                continue
            fit, native, raw_high = LIBRARIES[name]
            fit_X, valid_X = matrices[("native", raw_high) if native else "pipeline"]
            with warnings.catch_warnings(), threadpool_limits(limits=THREADS):
                warnings.simplefilter("ignore")
                started, cpu = time.perf_counter(), time.process_time()
                try:
                    model, n_rounds = fit(fit_X, y_train, kind, native)
                except Exception as exc:  # e.g. hgb_native: more levels than max_bins
                    errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                    print(f"  fold {k + 1}/{folds} {name:<16} failed: {errors[name]}", flush=True)
                    continue
                fit_s[name] += time.perf_counter() - started
                cpu_s[name] += time.process_time() - cpu
                pred = predictions(model, valid_X, kind, score_with.needs_proba)
            if name not in oof:
                oof[name] = np.zeros((len(X), *pred.shape[1:]), dtype=pred.dtype)
            oof[name][valid] = pred
            fold_scores[name].append(float(score_with.fn(y[valid], pred)))
            rounds[name].append(n_rounds)
            print(f"  fold {k + 1}/{folds} {name:<16} {fold_scores[name][-1]:.5f}  {n_rounds:>5} rounds  "
                  f"{fit_s[name]:7.1f} s ({cpu_s[name]:.1f} s CPU) so far", flush=True)
    result = dict(done)
    for name in todo:
        if name in errors:
            result[name] = {"error": errors[name]}
            continue
        matrix = "native" if LIBRARIES[name][1] else "pipeline"
        result[name] = {"score": float(score_with.fn(y, oof[name])), "fit_s": round(fit_s[name], 2),
                        "fit_cpu_s": round(cpu_s[name], 2), "features_s": round(features_s[matrix], 2),
                        "fold_scores": fold_scores[name], "rounds": rounds[name],
                        "features_sha256": features_digest(), "finished": time.strftime("%Y-%m-%d %H:%M")}
    meta = {"rows": len(X), "columns": int(X.shape[1]), "kind": kind, "metric": task.metric,
            "greater_is_better": score_with.greater_is_better, "folds": folds,
            "subsample": rows}
    save(task.name, meta, result)
    return result


def features_digest() -> str:
    """Which ``features`` code made the matrices: a hash of the two modules used."""
    digest = hashlib.sha256()
    for module in ("roles.py", "tabular.py"):
        digest.update((ROOT / "features" / module).read_bytes())
    return digest.hexdigest()[:12]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
             "scikit-learn": sklearn.__version__}
    for name in ("lightgbm", "xgboost", "catboost"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = "not installed"
    return found


def verdict(meta: dict, rows: dict) -> str:
    rows = {m: r for m, r in rows.items() if "score" in r}
    better = max if meta["greater_is_better"] else min
    best = better(rows, key=lambda m: rows[m]["score"])
    fastest = min(rows, key=lambda m: rows[m]["fit_s"])
    line = f"best score {best} {rows[best]['score']:.5f}, fastest {fastest} {rows[fastest]['fit_s']:.1f} s"
    hgb = rows.get("hgb")
    if hgb and best != "hgb":
        sign = 1 if meta["greater_is_better"] else -1
        gain = sign * (rows[best]["score"] - hgb["score"])
        line += (f"; {best} beats hgb by {gain:.5f} ({100 * gain / abs(hgb['score']):.2f}%) "
                 f"in {rows[best]['fit_s'] / max(hgb['fit_s'], 1e-9):.2f}x hgb's fit time")
    return line


def table(results: dict, models: list[str]) -> str:
    """Two task x library grids: out-of-fold score, then fit seconds summed over folds."""
    names = [m for m in models if any(m in t["models"] for t in results["tasks"].values())]
    short = {m: m.replace("lightgbm", "lgbm").replace("xgboost", "xgb").replace("catboost", "cat")
             for m in names}
    head = f"{'':<14}{'metric':<9}{'folds':>5}" + "".join(f"{short[m]:>12}" for m in names)
    lines = []
    for title, cell in (("out-of-fold score", lambda r: f"{r['score']:.4f}"),
                        ("fit seconds, summed over folds (CPU seconds)",
                         lambda r: f"{r['fit_s']:.1f}({r['fit_cpu_s']:.0f})")):
        lines += [title, head, "-" * len(head)]
        for task, entry in results["tasks"].items():
            row = entry["models"]
            cells = [cell(row[m]) if "score" in row.get(m, {}) else ("error" if m in row else "-") for m in names]
            lines.append(f"{task:<14}{entry['meta']['metric']:<9}{entry['meta']['folds']:>5}"
                         + "".join(f"{c:>12}" for c in cells))
        lines.append("")
    for task, entry in results["tasks"].items():
        lines.append(f"{task}: {verdict(entry['meta'], entry['models'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", help="suite tasks (default: all)")
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), choices=ALL_MODELS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--large-folds", type=int, default=3, help=f"folds for tasks of {LARGE} rows or more")
    parser.add_argument("--rows", type=int, help="subsample train.csv to this many rows (smoke tests)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in the results file (same folds), run the missing ones")
    parser.add_argument("--redo", nargs="*", choices=ALL_MODELS, help="with --resume: run these rows again")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    tasks = suite_tasks()
    if args.tasks:
        known = {t.name: t for t in tasks}
        missing = [t for t in args.tasks if t not in known]
        if missing:
            parser.error(f"unknown tasks {missing}; known: {', '.join(known)}")
        tasks = [known[t] for t in args.tasks]
    results = {"versions": versions(), "threads": THREADS, "learning_rate": LEARNING_RATE,
               "max_rounds": MAX_ROUNDS, "patience": PATIENCE, "tasks": {}}
    if args.out.is_file():
        previous = json.loads(args.out.read_text())
        results["tasks"] = previous.get("tasks", {})
    print("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), flush=True)

    def save(name: str, meta: dict, rows: dict) -> None:
        results["tasks"][name] = {"meta": meta, "models": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    for task in tasks:
        if not (task.directory / "train.csv").is_file():
            print(f"{task.name}: {task.directory} not built (.venv/bin/python bench/tabular_suite.py), skipped")
            continue
        rows = len(pd.read_csv(task.directory / "train.csv", usecols=[task.target]))
        folds = args.large_folds if rows >= LARGE and not args.rows else args.folds
        previous = results["tasks"].get(task.name, {})
        done = {}
        if args.resume and previous.get("meta", {}).get("folds") == folds:
            done = {m: r for m, r in previous["models"].items() if m not in (args.redo or ())}
        if all(m in done for m in args.models):
            continue
        run_task(task, args.models, folds, args.rows, done, save)
    print()
    print(table(results, list(ALL_MODELS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
